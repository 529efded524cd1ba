"""Small helpers shared by the tests (polling, paths, the PostgreSQL test server)."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")
EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
PG_ADMIN_URL = os.environ.get("TUNEHUB_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
"""The PostgreSQL server the tests use (trust auth); each test gets its own database on it."""
WORKER_TEST_TIMINGS = {
    "TUNEHUB_WORKER_REPEAT": "2",
    "TUNEHUB_WORKER_MIN_REPEAT_MS": "1",
    "TUNEHUB_WORKER_QUIET_WAIT_S": "1",
}
"""Environment for ``tunehub worker`` processes of tests that check where results go, not how
precise they are: brief timings, and on a busy machine a disturbed timing is retried after at
most 1 s of waiting for quiet CPUs (the policy itself is tested in tests/workers)."""


TUNER_TEST_SEARCH = {"TUNEHUB_SEARCH_POPULATION": "64"}
"""Environment for tuner processes of tests that check where candidates go, not how well they
are searched: a round of MetaSchedule's 512-schedule population takes seconds per task here."""


def wait_for(
    probe: Callable[[], T],
    *,
    timeout_s: float,
    what: str,
    poll_s: float = 0.5,
    on_timeout: Callable[[], str] | None = None,
) -> T:
    """Poll ``probe`` until it returns something truthy; fail with ``what`` (and logs) on timeout."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            extra = "\n" + on_timeout() if on_timeout else ""
            raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}{extra}")
        time.sleep(poll_s)
