"""Alembic migrations build the schema the models describe, on SQLite and on a real PostgreSQL."""

import subprocess
import sys

import pytest
from sqlalchemy import create_engine, inspect

from shared.migrate import check, upgrade
from shared.models import Base


def _assert_migrated(url: str) -> None:
    upgrade(url)
    engine = create_engine(url)
    try:
        assert set(Base.metadata.tables) <= set(inspect(engine).get_table_names())
    finally:
        engine.dispose()
    check(url)  # raises when a model differs from what the migrations built


def test_upgrade_on_sqlite_matches_the_models(tmp_path):
    _assert_migrated(f"sqlite:///{tmp_path / 'fresh' / 'creditq.db'}")


@pytest.mark.postgres
def test_upgrade_on_postgres_matches_the_models(postgres_server):
    _assert_migrated(postgres_server.create_database("migrations_check"))


def test_upgrade_twice_is_harmless(tmp_path):
    url = f"sqlite:///{tmp_path / 'creditq.db'}"
    upgrade(url)
    upgrade(url)
    check(url)


def test_db_upgrade_command(tmp_path):
    # given an empty data directory; when the operator runs `creditq db upgrade`
    env = {"PATH": "/usr/bin:/bin", "CREDITQ_DATA_DIR": str(tmp_path)}
    result = subprocess.run([sys.executable, "-m", "creditq", "db", "upgrade"], env=env, capture_output=True,
                            text=True, timeout=120)

    # then the default SQLite file exists with the whole schema
    assert result.returncode == 0, result.stderr
    engine = create_engine(f"sqlite:///{tmp_path / 'creditq.db'}")
    assert "accounts" in inspect(engine).get_table_names()
    engine.dispose()
