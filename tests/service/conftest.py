"""Fixtures: a real uvicorn server on a free loopback port, over SQLite and PostgreSQL.

``live`` is module-scoped (one database and one server per backend per test
module), so tests in a module share state: they count rows before and after,
and use their own target keys where the queue must look empty.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from live_server import Live, module_pg_db, running


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def live(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    """One service per backend for the whole test module."""
    data_dir = tmp_path_factory.mktemp("live")
    if request.param == "sqlite":
        with running(f"sqlite:///{data_dir / 'tunehub.db'}", data_dir) as svc:
            yield svc
        return
    with module_pg_db(request.getfixturevalue("pg_template")) as url, running(url, data_dir) as svc:
        yield svc

