"""The calibration judge: is this worker as fast now as it has recently been?

The runner times a fixed small kernel (the calibration) at start and before a run
phase when the last one is stale; results measured while it is ``degraded``
(slower than ``tolerance`` x its recent best: throttled, or overloaded for a
while) are flagged. A calibration disturbed by other processes is not counted.
"""

from __future__ import annotations

import logging
from common.protocol import Calibration
from workers import sandbox_protocol as sp

log = logging.getLogger("workers.calibration")


class Calibrator:
    """Judges the worker's state from the calibration kernel's times.

    The baseline is the fastest of the last ``window`` calibrations: the machine
    can always be slower than its best, never faster, so the minimum is its
    unloaded speed, and a baseline taken while busy corrects itself as soon
    as a quieter calibration comes (the window lets a machine that is now
    permanently slower, e.g. moved to a power-saving profile, settle on its
    new speed). ``degraded`` when the latest time exceeds ``tolerance`` × baseline.
    """

    def __init__(self, tolerance: float = 1.3, window: int = 50):
        if tolerance <= 1.0:
            raise ValueError(f"calibration tolerance must exceed 1.0, got {tolerance}")
        self.tolerance = tolerance
        self.window = window
        self.samples: list[float] = []
        self.detail: str | None = None

    def add(self, secs: float) -> None:
        self.samples = (self.samples + [float(secs)])[-self.window :]
        self.detail = None

    def failed(self, reason: str) -> None:
        self.detail = reason

    def record(self, reply: sp.Reply | None, *, disturbed: bool) -> bool:
        """Count one reply to ``calibrate``; False when it is not counted.

        Not counted: an interrupted one (None), a failed one (its error becomes the
        detail) and a disturbed one: other processes on our CPUs say nothing about this
        machine's own speed, and such a sample would flag every result until the next.
        """
        if reply is None:
            return False
        if not isinstance(reply, sp.Calibrated):
            error = reply.error if isinstance(reply, sp.Failed) else f"sandbox protocol error: {reply!r}"
            log.warning("calibration failed: %s", error)
            self.failed(error[:500])
            return False
        if disturbed:
            log.info("calibration disturbed (other processes used %.0f %% of our CPUs): not counted",
                     100 * (reply.others_busy or 0.0))
            return False
        self.add(reply.secs)
        snap = self.snapshot()
        log.log(
            logging.WARNING if snap.status == "degraded" else logging.INFO,
            "calibration %.4g ms (baseline %.4g ms, ratio %.2f): %s",
            reply.secs * 1e3,
            (snap.baseline_s or 0) * 1e3,
            snap.ratio or 1.0,
            snap.status,
        )
        return True

    @property
    def ratio(self) -> float | None:
        if not self.samples:
            return None
        return self.samples[-1] / min(self.samples)

    @property
    def degraded(self) -> bool:
        ratio = self.ratio
        return ratio is not None and ratio > self.tolerance

    def snapshot(self) -> Calibration:
        if not self.samples:
            return Calibration(status="unknown", tolerance=self.tolerance, detail=self.detail or "not calibrated yet")
        return Calibration(
            status="degraded" if self.degraded else "ok",
            ratio=round(self.ratio or 1.0, 4),
            baseline_s=min(self.samples),
            latest_s=self.samples[-1],
            tolerance=self.tolerance,
            samples=len(self.samples),
            detail=self.detail,
        )
