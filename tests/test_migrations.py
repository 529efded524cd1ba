"""The Alembic migrations build the schema the models describe, on both backends."""

from sqlalchemy import inspect

from db.engine import make_engine
from db.migrate import downgrade, upgrade
from db.models import Base


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
