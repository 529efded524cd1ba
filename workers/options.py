"""The worker's options: one typed object, built once and passed whole to fleet, daemon and measurer.

Built from ``common.settings.Settings`` (``TUNEHUB_WORKER_*``) plus the CLI's flags
(``WorkerOptions.from_settings``); what differs per device (target, CPUs, CUDA
compiler, sandbox environment) travels beside it, not in it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from common.settings import Settings
from workers.detect import available_cores
from workers.timing import Timing

MAX_DEFAULT_BUILDERS = 4


def default_build_workers(devices: int = 1) -> int:
    """Builder processes per device by default: the cores shared among the devices, at most 4.

    Each builder holds a TVM process (~300 MB); past a few, a batch of 8 is
    built no faster.
    """
    return max(1, min(MAX_DEFAULT_BUILDERS, len(available_cores()) // max(1, devices)))


@dataclass(frozen=True)
class WorkerOptions:
    """How a worker leases, measures and judges its measurements.

    ``build_workers`` None means the default for the machine (cores per device, at
    most 4); ``timing`` None means the target kind's default (cache flush on CPUs).
    """

    # leasing and the service
    max_candidates: int = 8
    poll_s: float = 1.0
    heartbeat_s: float | None = None  # None: a third of the lease's time to live
    http_timeout_s: float = 30.0
    backoff_max_s: float = 30.0
    # building and running
    build_workers: int | None = None
    build_timeout_s: float = 30.0
    run_timeout_s: float = 60.0
    timing: Timing | None = None
    check: bool = True
    pin: bool = True
    # judging: calibration and interference
    calibrate_every_s: float = 30.0
    calibration_tolerance: float = 1.3
    interference_tolerance: float = 0.2
    interference_retries: int = 2
    quiet_wait_s: float = 10.0

    @classmethod
    def from_settings(cls, settings: Settings, **flags: Any) -> WorkerOptions:
        """The settings' worker options, with every flag that is not None put over them.

        Timing flags (``number``, ``repeat``, ``min_repeat_ms``, ``warmup``, ``cache_flush``)
        go into ``timing``.
        """
        given = {k: v for k, v in flags.items() if v is not None}
        timing = Timing(
            number=given.pop("number", settings.worker_number),
            repeat=given.pop("repeat", settings.worker_repeat),
            min_repeat_ms=given.pop("min_repeat_ms", settings.worker_min_repeat_ms),
            warmup=given.pop("warmup", settings.worker_warmup),
            cache_flush=given.pop("cache_flush", settings.worker_cache_flush),
        )
        base = cls(
            build_workers=settings.worker_build_workers,
            build_timeout_s=settings.worker_build_timeout_s,
            run_timeout_s=settings.worker_run_timeout_s,
            timing=timing,
            pin=settings.worker_pin,
            calibrate_every_s=settings.worker_calibrate_every_s,
            calibration_tolerance=settings.worker_calibration_tolerance,
            interference_tolerance=settings.worker_interference_tolerance,
            interference_retries=settings.worker_interference_retries,
            quiet_wait_s=settings.worker_quiet_wait_s,
        )
        return base.replace(**given)

    def replace(self, **changes: Any) -> WorkerOptions:
        return dataclasses.replace(self, **changes)
