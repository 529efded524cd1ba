"""Alembic environment: migrations run online against the configured URL."""

from __future__ import annotations

from alembic import context
from sqlalchemy import text

from db.engine import make_engine
from db.models import Base

config = context.config
target_metadata = Base.metadata

# pg_advisory_lock key held while migrating ("tunehub" as an int64).
MIGRATION_LOCK_KEY = int.from_bytes(b"tunehub", "big")


def run_migrations_online() -> None:
    url = config.get_main_option("sqlalchemy.url")
    assert url
    engine = make_engine(url, null_pool=True)
    with engine.connect() as connection:
        if connection.dialect.name == "postgresql":
            # Replicas starting together on a fresh database would race to CREATE the
            # same tables; a session lock makes one migrate while the others wait and
            # then find the schema at head. Closing the connection releases it.
            connection.execute(text("SELECT pg_advisory_lock(:key)"), {"key": MIGRATION_LOCK_KEY})
            connection.commit()
        # SQLite needs no lock, but one transaction: every transaction takes the write lock at
        # BEGIN (db.engine), and SQLite's DDL is transactional. Alembic assumes it is not and
        # commits after each migration; a replica starting meanwhile could then read an older
        # version between two of them and run a migration twice ("table already exists").
        context.configure(connection=connection, target_metadata=target_metadata, render_as_batch=True,
                          transactional_ddl=True)
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


run_migrations_online()
