"""``FleetBuilder`` / ``FleetRunner``: a user's own ``ms.tune_tir`` measuring on the team's workers.

Tuning stays in the user's process; only measuring goes to the fleet. The
builder is a pass-through: it writes each scheduled module as JSON into its own
temporary directory (MetaSchedule removes an artifact's directory once it is
run) and workers build it themselves. The runner sends a batch as one ad-hoc
run (``POST /runs``), polls the results (one request per ``poll_s`` for the
whole batch) and hands MetaSchedule one future per candidate. Every future has
a deadline: a worker lost mid-batch, or no worker at all, makes its candidates
finish as errors, so the script ends with errors reported instead of hanging;
unmeasured candidates are then withdrawn from the queue.
"""

from __future__ import annotations

import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
from tvm.ir.utils import derived_object
from tvm.s_tir.meta_schedule.builder import BuilderResult, PyBuilder
from tvm.s_tir.meta_schedule.runner import PyRunner, PyRunnerFuture, RunnerResult

from common import errors
from common.client import TunehubClient
from common.protocol import CandidateState, RunResult

ARTIFACT_NAME = "scheduled_mod.json"
_CALL_ERRORS = (errors.TunehubError, httpx.HTTPError)  # the client raises httpx's errors for GETs it cannot send


@derived_object
class FleetBuilder(PyBuilder):
    """Pass-through builder: the artifact is the scheduled module's JSON (workers build it)."""

    def build(self, build_inputs: list[Any]) -> list[Any]:
        import tvm

        results = []
        for inp in build_inputs:
            try:
                path = Path(tempfile.mkdtemp(prefix="tunehub-fleet-")) / ARTIFACT_NAME
                path.write_text(tvm.ir.save_json(inp.mod))
                results.append(BuilderResult(str(path), None))
            except Exception as exc:  # noqa: BLE001  (reported to MetaSchedule as this candidate's build error)
                results.append(BuilderResult(None, f"FleetBuilder: {exc}"))
        return results


class _Batch:
    """One ad-hoc run's results, polled at most once per ``poll_s`` for all its futures, until its deadline."""

    def __init__(self, client: TunehubClient, run_id: int, candidate_ids: list[int], deadline: float, poll_s: float):
        self._client, self.run_id, self.ids = client, run_id, candidate_ids
        self.deadline, self._poll_s = deadline, poll_s
        self.results: dict[int, RunResult] = {}
        self._last_poll = 0.0
        self._closed = False
        self._lock = threading.Lock()

    def _finished(self, r: RunResult) -> bool:
        return r.run_secs is not None or r.error is not None or r.state == CandidateState.cancelled

    def refresh(self) -> None:
        with self._lock:
            if self._closed or time.monotonic() - self._last_poll < self._poll_s:
                return
            self._last_poll = time.monotonic()
            waiting = [c for c in self.ids if c not in self.results]
            try:
                for r in self._client.run_results(self.run_id, waiting).results:
                    if self._finished(r):
                        self.results[r.candidate_id] = r
            except _CALL_ERRORS:
                pass  # the service is away for now; the deadline still holds
            if len(self.results) == len(self.ids) or time.monotonic() >= self.deadline:
                self._close()

    def _close(self) -> None:
        self._closed = True
        try:
            self._client.close_run(self.run_id)
        except _CALL_ERRORS:
            pass  # best effort: an unreachable service cancels nothing, the deadline already freed the script

    def outcome(self, cid: int) -> RunnerResult | None:
        """The result once known, a timeout error after the deadline, else None."""
        r = self.results.get(cid)
        if r is not None:
            if r.run_secs is not None:
                return RunnerResult(run_secs=[float(s) for s in r.run_secs], error_msg=None)
            return RunnerResult(run_secs=None, error_msg=r.error or f"candidate {cid} was withdrawn before it was measured")
        if time.monotonic() >= self.deadline:
            with self._lock:
                if not self._closed:
                    self._close()
            return RunnerResult(run_secs=None, error_msg=f"timeout: no worker measured candidate {cid} in time")
        return None


@derived_object
class _FleetFuture(PyRunnerFuture):
    def __init__(self, batch: _Batch | None, candidate_id: int, error: str | None = None) -> None:
        super().__init__()
        self._batch, self._cid, self._error = batch, candidate_id, error

    def done(self) -> bool:
        if self._batch is None:
            return True
        self._batch.refresh()
        return self._batch.outcome(self._cid) is not None

    def result(self) -> Any:
        if self._batch is None:
            return RunnerResult(run_secs=None, error_msg=self._error)
        while True:
            self._batch.refresh()
            got = self._batch.outcome(self._cid)
            if got is not None:
                return got
            time.sleep(self._batch._poll_s / 2)


@derived_object
class FleetRunner(PyRunner):
    """Measures candidates on the fleet's workers for ``target`` (a worker must serve its target key).

    ``timeout_s`` bounds each batch from submission to its last result.
    """

    def __init__(
        self, server: str, *, token: str, target: dict[str, Any] | str, timeout_s: float = 300.0, poll_s: float = 1.0
    ) -> None:
        super().__init__()
        self._client = TunehubClient(server, token, timeout_s=30.0)
        self._target = target
        self._timeout_s, self._poll_s = timeout_s, poll_s
        self.run_ids: list[int] = []

    def run(self, runner_inputs: list[Any]) -> list[Any]:
        try:
            modules = [Path(inp.artifact_path).read_text() for inp in runner_inputs]
            created = self._client.create_run(self._target, modules)
        except (OSError, *_CALL_ERRORS) as exc:
            return [_FleetFuture(None, -1, f"FleetRunner: cannot submit the batch: {exc}") for _ in runner_inputs]
        self.run_ids.append(created.run_id)
        batch = _Batch(self._client, created.run_id, created.candidate_ids, time.monotonic() + self._timeout_s,
                       self._poll_s)
        return [_FleetFuture(batch, cid) for cid in created.candidate_ids]
