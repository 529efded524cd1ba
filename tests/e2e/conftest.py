"""Live processes for end-to-end tests: `tunehub serve`, `tunehub tuner`, `tunehub worker`.

Everything is real: uvicorn on a free loopback port, the tuner process, a worker
process with its TVM sandbox, SQLite under tmp_path (``stack``) or a fresh
PostgreSQL database (``pg_stack``), where several API replicas can share it.
The processes are started by ``tunehub.harness``, as the demo and the benches
start them; tests add short tuner and lease timings and a SQL probe.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests_support import TUNER_TEST_SEARCH, WORKER_TEST_TIMINGS
from tunehub.harness import Harness

FAST_TIMINGS = {
    "TUNEHUB_TUNER_GRACE_S": "4",  # a dead tuner's job is taken over within seconds
    "TUNEHUB_TUNER_HEARTBEAT_S": "1",
    "TUNEHUB_LEASE_TTL_S": "30",
    **WORKER_TEST_TIMINGS,
    **TUNER_TEST_SEARCH,
}


@dataclass
class Stack(Harness):
    """A harness with the tests' timings and a way to read the database directly."""

    def __post_init__(self) -> None:
        super().__post_init__()
        self.overrides = {**FAST_TIMINGS, **self.overrides}

    def sql(self, query: str) -> list[tuple]:
        """Rows of one query against the stack's database, either backend."""
        from sqlalchemy import create_engine, text
        from sqlalchemy.pool import NullPool

        engine = create_engine(self.db_url, poolclass=NullPool)
        try:
            with engine.connect() as conn:
                return [tuple(r) for r in conn.execute(text(query))]
        finally:
            engine.dispose()


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    with Stack(tmp_path) as s:
        yield s


@pytest.fixture
def pg_stack(tmp_path: Path, pg_url: str) -> Iterator[Stack]:
    """A stack on a fresh, migrated PostgreSQL database (skips where no server answers)."""
    with Stack(tmp_path, database_url=pg_url) as s:
        yield s
