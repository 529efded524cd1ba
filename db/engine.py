"""Engines, the one session helper, and the database clock.

``session_scope`` commits, rolls back on error and always closes, so a session
never outlives a request or one loop iteration (Optuna's storage habit).
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import Engine, create_engine, event, func, make_url, select, text
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import NullPool

SQLITE_BUSY_TIMEOUT_S = 30.0


def make_engine(
    url: str,
    *,
    null_pool: bool = False,
    pool_size: int = 10,
    max_overflow: int = 20,
    pool_timeout_s: float = 30.0,
    pool_recycle_s: float | None = None,
) -> Engine:
    """An engine with the settings each backend needs for a shared queue.

    ``null_pool`` opens a connection per use (migrations, short-lived tools);
    otherwise the pool keeps ``pool_size`` connections, opens up to
    ``max_overflow`` more under load, makes a caller wait ``pool_timeout_s``
    for one, and reopens connections older than ``pool_recycle_s``
    (``Settings.pool_options()`` carries these from the environment).
    PostgreSQL connections are pinged at checkout, so connections the server
    dropped (a restart, ``pg_terminate_backend``) are replaced, not handed out.
    """
    extra: dict[str, Any] = (
        {"poolclass": NullPool}
        if null_pool
        else {
            "pool_size": pool_size,
            "max_overflow": max_overflow,
            "pool_timeout": pool_timeout_s,
            "pool_recycle": -1 if pool_recycle_s is None else pool_recycle_s,
        }
    )
    if url.startswith("sqlite"):
        if make_url(url).database in (None, "", ":memory:"):
            extra = {}  # one in-process database: SQLAlchemy picks its own single-connection pool
        connect_args = {"timeout": SQLITE_BUSY_TIMEOUT_S, "check_same_thread": False, "factory": _serialized_connection_class()}
        engine = create_engine(url, connect_args=connect_args, **extra)

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record):  # type: ignore[no-untyped-def]
            # WAL lets the API, the tuner and readers work at once; FKs are off by default.
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            # In WAL mode NORMAL syncs at checkpoints, not at every commit (4 ms each here,
            # and every write holds the one write lock meanwhile). A crashed or killed
            # process loses nothing committed; only an OS crash or power cut may roll back
            # the last commits, leaving a consistent database whose un-acked work is redone.
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute(f"PRAGMA busy_timeout={int(SQLITE_BUSY_TIMEOUT_S * 1000)}")
            cur.close()
            # Take the write lock at BEGIN, so read-then-write (leasing) cannot interleave.
            dbapi_conn.isolation_level = None

        @event.listens_for(engine, "begin")
        def _sqlite_begin(conn):  # type: ignore[no-untyped-def]
            dbapi_conn = conn.connection.dbapi_connection
            dbapi_conn.take_write_lock()
            try:
                conn.exec_driver_sql("BEGIN IMMEDIATE")
            except BaseException:
                dbapi_conn.drop_write_lock()
                raise

        return engine
    return create_engine(url, pool_pre_ping=not null_pool, **extra)


class _SerializedSqliteConnection(sqlite3.Connection):
    """A SQLite connection whose transactions queue on one lock per engine.

    Every transaction takes SQLite's write lock at BEGIN (``BEGIN IMMEDIATE``).
    Threads of one process that contend for it through SQLite's busy handler
    sleep and retry (1, 2, 5 ... 100 ms), and under load (tens of workers
    leasing at once) some starve past the busy timeout: "database is locked".
    Queueing them on a ``threading.Lock`` first wakes the next one the moment
    the lock is free; only other processes (the tuner beside the API) still
    meet the busy handler. Released when the transaction ends: commit,
    rollback (the pool's reset included) or close.
    """

    _engine_lock: threading.Lock  # set per engine by _serialized_connection_class
    _holds_lock = False

    def take_write_lock(self) -> None:
        if not self._engine_lock.acquire(timeout=SQLITE_BUSY_TIMEOUT_S):
            raise sqlite3.OperationalError(
                f"database is locked: no transaction of this process finished in {SQLITE_BUSY_TIMEOUT_S:.0f} s"
            )
        self._holds_lock = True

    def drop_write_lock(self) -> None:
        if self._holds_lock:
            self._holds_lock = False
            self._engine_lock.release()

    def commit(self) -> None:
        try:
            super().commit()
        finally:
            self.drop_write_lock()

    def rollback(self) -> None:
        try:
            super().rollback()
        finally:
            self.drop_write_lock()

    def close(self) -> None:
        try:
            super().close()
        finally:
            self.drop_write_lock()


def _serialized_connection_class() -> type[_SerializedSqliteConnection]:
    """A connection class with a lock of its own, for one engine."""
    return type("SerializedSqliteConnection", (_SerializedSqliteConnection,), {"_engine_lock": threading.Lock()})


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


_SQLITE_NOW = text("SELECT strftime('%Y-%m-%d %H:%M:%f', 'now')")
_PG_NOW = select(func.timezone("UTC", func.now()))  # built once: every request asks


def db_now(session: Session) -> datetime:
    """The database's clock as naive UTC; liveness decisions use this, never the host clock."""
    dialect = session.get_bind().dialect.name
    if dialect == "sqlite":
        return datetime.fromisoformat(session.execute(_SQLITE_NOW).scalar_one())
    if dialect == "postgresql":
        return session.execute(_PG_NOW).scalar_one()
    return datetime.now(timezone.utc).replace(tzinfo=None)


def as_utc(value: datetime | None) -> datetime | None:
    """A stored timestamp (naive UTC on both backends) as a timezone-aware UTC datetime for the wire."""
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=timezone.utc)
