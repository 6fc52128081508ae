"""The schema comes from Alembic only, and the models agree with it."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, inspect, text

from elpis_api.migrate import alembic_config, upgrade
from models import Base


def test_upgrade_head_on_an_empty_database_matches_the_models(fresh_database):
    upgrade(fresh_database)
    engine = create_engine(fresh_database)
    try:
        with engine.connect() as conn:
            assert conn.scalar(text("SELECT extversion FROM pg_extension WHERE extname = 'vector'"))
            assert {"batch", "task", "step", "worker_process"} <= set(inspect(conn).get_table_names())
            diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
            assert diff == [], f"models and migrations drifted: {diff}"
    finally:
        engine.dispose()


def test_downgrade_to_base_and_back(fresh_database):
    from alembic import command

    upgrade(fresh_database)
    command.downgrade(alembic_config(fresh_database), "base")
    engine = create_engine(fresh_database)
    try:
        with engine.connect() as conn:
            assert "task" not in inspect(conn).get_table_names()
    finally:
        engine.dispose()
    upgrade(fresh_database)


def test_one_head():
    from alembic.script import ScriptDirectory

    heads = ScriptDirectory.from_config(alembic_config("postgresql+psycopg://unused/x")).get_heads()
    assert len(heads) == 1, f"several migration heads {heads}: add a merge revision"
