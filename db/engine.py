"""Engines, the one session helper, and the database clock.

``session_scope`` commits, rolls back on error and always closes, so a session
never outlives a request or one loop iteration (Optuna's storage habit).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone

from sqlalchemy import Engine, create_engine, event, func, select, text
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import NullPool


def make_engine(url: str, *, null_pool: bool = False) -> Engine:
    """An engine with the settings each backend needs for a shared queue.

    ``null_pool`` opens a connection per use (migrations, short-lived tools).
    """
    extra = {"poolclass": NullPool} if null_pool else {}
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False}, **extra)

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record):  # type: ignore[no-untyped-def]
            # WAL lets the API, the tuner and readers work at once; FKs are off by default.
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()
            # Take the write lock at BEGIN, so read-then-write (leasing) cannot interleave.
            dbapi_conn.isolation_level = None

        @event.listens_for(engine, "begin")
        def _sqlite_begin(conn):  # type: ignore[no-untyped-def]
            conn.exec_driver_sql("BEGIN IMMEDIATE")

        return engine
    if null_pool:
        return create_engine(url, **extra)
    return create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=20)


def make_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


@contextmanager
def session_scope(factory: sessionmaker[Session]) -> Iterator[Session]:
    """One unit of work: commit on success, roll back on error, always close."""
    session = factory()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def db_now(session: Session) -> datetime:
    """The database's clock as naive UTC; liveness decisions use this, never the host clock."""
    dialect = session.get_bind().dialect.name
    if dialect == "sqlite":
        raw = session.execute(text("SELECT strftime('%Y-%m-%d %H:%M:%f', 'now')")).scalar_one()
        return datetime.fromisoformat(raw)
    if dialect == "postgresql":
        return session.execute(select(func.timezone("UTC", func.now()))).scalar_one()
    return datetime.now(timezone.utc).replace(tzinfo=None)
