"""Alembic migrations build the schema the models describe, on SQLite and on a real PostgreSQL."""

import subprocess
import sys

import pytest
from alembic import command
from sqlalchemy import create_engine, inspect, text

from shared.db import Database
from shared.migrate import alembic_config, check, upgrade
from shared.models import Account, Base, DunningIntegration
from shared.secrets import decrypt


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


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_upgrading_encrypts_the_secrets_already_stored_and_downgrading_restores_them(backend, tmp_path, request):
    # given a database at 0002 holding plain-text tokens and an answer with an API key
    url = (f"sqlite:///{tmp_path / 'creditq.db'}" if backend == "sqlite"
           else request.getfixturevalue("postgres_server").create_database("migrations_secrets"))
    upgrade(url, "0002")
    engine = create_engine(url)
    with engine.begin() as connection:
        connection.execute(text(
            "INSERT INTO accounts (id, name, timezone, plan_monthly_credits, plan_cycle, plan_rollover, "
            "overdraft_policy, overdraft_limit, low_balance_threshold, status, credit_hold, rollover_protection, "
            "spam, balance, held, allocated, allocated_held, twilio_account_sid, twilio_auth_token) VALUES "
            "('acct_1', 'Grace', 'UTC', 0, 'monthly', 'none', 'prepaid', 0, 0, 'active', false, false, false, "
            "0, 0, 0, 0, :sid, 'account-token'), "
            "('acct_2', 'Harbor', 'UTC', 0, 'monthly', 'none', 'prepaid', 0, 0, 'active', false, false, false, "
            "0, 0, 0, 0, NULL, NULL)"), {"sid": "AC" + "1" * 32})
        connection.execute(text(
            "INSERT INTO dunning_integrations (site, account_sid, auth_token, from_number, status, updated_at) "
            "VALUES ('default', :sid, 'site-token', '+15005550006', 'ok', CURRENT_TIMESTAMP)"),
            {"sid": "AC" + "1" * 32})
        connection.execute(text(
            "INSERT INTO idempotency_records (principal, key, request_hash, status, body) "
            "VALUES ('operator', 'create-1', :hash, 201, '{\"api_key\": \"cq_live_secret\"}')"), {"hash": "0" * 64})

    def stored() -> list:
        with engine.connect() as connection:
            return [*connection.execute(text("SELECT twilio_auth_token FROM accounts ORDER BY id")).scalars(),
                    *connection.execute(text("SELECT auth_token FROM dunning_integrations")).scalars(),
                    *connection.execute(text("SELECT body FROM idempotency_records")).scalars()]

    try:
        # when it is upgraded: each value is a token of the deployment key, NULL stays NULL
        upgrade(url)
        encrypted = stored()
        assert encrypted[1] is None
        assert [decrypt(value) for value in encrypted if value is not None] == [
            "account-token", "site-token", '{"api_key": "cq_live_secret"}']
        database = Database(url)
        with database.unit_of_work() as session:
            assert session.get(DunningIntegration, "default").credential_version == 1
            assert session.get(Account, "acct_1").twilio_auth_token == "account-token"
        database.dispose()

        # and when it is downgraded again: the plain values come back
        command.downgrade(alembic_config(url), "0002")
        assert stored() == ["account-token", None, "site-token", '{"api_key": "cq_live_secret"}']
    finally:
        engine.dispose()
