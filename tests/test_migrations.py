"""The Alembic migrations build the schema the models describe, on both backends."""

import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, inspect, text

from db.engine import make_engine
from db.migrate import downgrade, upgrade
from db.models import Base

from tests_support import PG_ADMIN_URL


def test_migrations_match_models_and_downgrade(db_url: str) -> None:
    engine = make_engine(db_url)
    tables = set(inspect(engine).get_table_names())
    assert set(Base.metadata.tables) <= tables
    for name, table in Base.metadata.tables.items():
        cols = {c["name"] for c in inspect(engine).get_columns(name)}
        assert cols == {c.name for c in table.columns}, name
    engine.dispose()
    downgrade(db_url)
    engine = make_engine(db_url)
    assert not set(Base.metadata.tables) & set(inspect(engine).get_table_names())
    engine.dispose()
    upgrade(db_url)  # and back again


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def empty_db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A database with no schema at all, once per backend."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'fresh.db'}"
        return
    request.getfixturevalue("pg_template")  # skips, with the reason, where no server answers
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    name = f"tunehub_e_{uuid.uuid4().hex[:10]}"
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    yield PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + name
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def test_replicas_starting_together_migrate_a_fresh_database_once(empty_db_url: str) -> None:
    """Several services (and tuners) run ``upgrade`` at start; on a fresh database they race."""
    code = f"from db.migrate import upgrade; upgrade({empty_db_url!r})"
    procs = [subprocess.Popen([sys.executable, "-c", code], stderr=subprocess.PIPE) for _ in range(6)]
    errors = [p.communicate(timeout=120)[1].decode()[-2000:] for p in procs]
    assert [p.returncode for p in procs] == [0] * 6, errors
    engine = make_engine(empty_db_url, null_pool=True)
    with engine.connect() as conn:
        assert len(conn.execute(text("SELECT version_num FROM alembic_version")).all()) == 1
    assert set(Base.metadata.tables) <= set(inspect(engine).get_table_names())
    engine.dispose()
