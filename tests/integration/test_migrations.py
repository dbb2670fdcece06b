"""Alembic migrations build the schema the models describe, on SQLite and on a real PostgreSQL."""

import importlib
import logging
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from alembic import command
from sqlalchemy import create_engine, inspect, select, text
from sqlalchemy.exc import IntegrityError

from shared.db import Database
from shared.ledger import accounts, book
from shared.migrate import alembic_config, check, upgrade
from shared.models import Account, Base, DunningIntegration, Lot
from shared.secrets import decrypt

NOW = datetime(2026, 3, 2, tzinfo=UTC)


def open_account(database: Database, name: str) -> str:
    """A prepaid account without a plan, made through the models: 0025 leaves `accounts` as 0024 made it."""
    with database.unit_of_work() as session:
        account, _ = accounts.create_account(
            session, name=name, timezone="UTC", plan_monthly_credits=0, plan_cycle="monthly", plan_rollover="none",
            overdraft=accounts.Overdraft("prepaid"), low_balance_threshold=0, now=NOW)
        return account.id


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


def _upgrade_with_numbers_shared_by_accounts(url: str, caplog) -> list[tuple]:
    """Given three accounts that claimed one number (allowed before 0003), when the database is upgraded."""
    upgrade(url, "0002")
    engine = create_engine(url)
    with engine.begin() as connection:
        for account in ("acct_first", "acct_second", "acct_third"):
            connection.execute(text("INSERT INTO accounts (id, name, timezone, plan_monthly_credits, plan_cycle, "
                                    "plan_rollover, overdraft_policy, overdraft_limit, low_balance_threshold, status, "
                                    "credit_hold, rollover_protection, spam, balance, held, allocated, allocated_held) "
                                    "VALUES (:id, :id, 'UTC', 0, 'monthly', 'none', 'prepaid', 0, 0, 'active', "
                                    "false, false, false, 0, 0, 0, 0)"), {"id": account})
        claims = [("acct_first", "+14155550101"), ("acct_second", "+14155550101"), ("acct_third", "+14155550101"),
                  ("acct_second", "+14155550102")]
        for account, phone in claims:
            connection.execute(text("INSERT INTO phone_numbers (account_id, phone, type, monthly_cost) "
                                    "VALUES (:account, :phone, 'long_code', 0)"), {"account": account, "phone": phone})
    with caplog.at_level(logging.WARNING):
        upgrade(url)
    with engine.connect() as connection:
        kept = connection.execute(text("SELECT account_id, phone FROM phone_numbers ORDER BY id")).all()
    engine.dispose()
    check(url)
    return [tuple(row) for row in kept]


def _released(caplog) -> list[str]:
    return [record.getMessage().split(" (")[0] for record in caplog.records if "released number" in record.getMessage()]


def test_upgrading_keeps_the_earliest_claim_of_a_shared_number_and_logs_each_release(tmp_path, caplog):
    kept = _upgrade_with_numbers_shared_by_accounts(f"sqlite:///{tmp_path / 'shared.db'}", caplog)

    # then the first claim keeps the number, the later ones are released and logged, other numbers stay
    assert kept == [("acct_first", "+14155550101"), ("acct_second", "+14155550102")]
    assert _released(caplog) == ["released number +14155550101 from account acct_second",
                                 "released number +14155550101 from account acct_third"]


@pytest.mark.postgres
def test_upgrading_releases_shared_numbers_on_postgres(postgres_server, caplog):
    kept = _upgrade_with_numbers_shared_by_accounts(postgres_server.create_database("migrations_shared"), caplog)

    assert kept == [("acct_first", "+14155550101"), ("acct_second", "+14155550102")]
    assert len(_released(caplog)) == 2


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
            site = session.scalar(select(DunningIntegration).where(DunningIntegration.site == "default"))
            assert site.account_id is None and site.credential_version == 1  # creditq's own, built-in site
            assert session.get(Account, "acct_1").twilio_auth_token == "account-token"
        database.dispose()

        # and when it is downgraded again: the plain values come back
        command.downgrade(alembic_config(url), "0002")
        assert stored() == ["account-token", None, "site-token", '{"api_key": "cq_live_secret"}']
    finally:
        engine.dispose()


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_upgrading_anchors_the_cycles_of_existing_accounts_at_their_creation(backend, tmp_path, request):
    # given an account created on 2025-07-14, stored before cycles had an anchor of their own
    url = (f"sqlite:///{tmp_path / 'creditq.db'}" if backend == "sqlite"
           else request.getfixturevalue("postgres_server").create_database("migrations_anchor"))
    upgrade(url, "0007")
    engine = create_engine(url)
    with engine.begin() as connection:
        connection.execute(text(
            "INSERT INTO accounts (id, name, timezone, plan_monthly_credits, plan_cycle, plan_rollover, "
            "overdraft_policy, overdraft_limit, low_balance_threshold, status, credit_hold, rollover_protection, "
            "spam, balance, held, allocated, allocated_held, created_at) VALUES ('acct_old', 'Grace', 'UTC', 0, "
            "'quarterly', 'none', 'prepaid', 0, 0, 'active', false, false, false, 0, 0, 0, 0, :created)"),
            {"created": "2025-07-14 09:30:00+00:00"})

    # when the database is upgraded, then its cycles still count from its creation
    upgrade(url)
    database = Database(url)
    try:
        with database.unit_of_work() as session:
            account = session.get(Account, "acct_old")
            assert account.cycle_anchor_at == account.created_at
            assert account.canceled_at is None
    finally:
        database.dispose()
        engine.dispose()


@pytest.mark.postgres
def test_the_lot_burn_moves_into_ledger_settle_and_back_and_settles_alike_at_each_step(postgres_server):
    # given a database the release before migrated to 0023, where ledger_settle burns lots through ledger_burn (0002
    # and 0008 install the functions of the code that runs them, so a fresh database needs them put back)
    url = postgres_server.create_database("migrations_burn")
    upgrade(url, "0023")
    engine = create_engine(url)
    migration = importlib.import_module("shared.migrations.versions.0024_inline_lot_burn")
    with engine.begin() as connection:
        connection.exec_driver_sql(migration.BURN_BEFORE_0024)
        connection.exec_driver_sql(migration.SETTLE_BEFORE_0024)

    def functions() -> dict[str, str]:
        with engine.connect() as connection:
            return dict(connection.execute(text(
                "SELECT proname, prosrc FROM pg_proc WHERE proname IN ('ledger_settle', 'ledger_burn')")).all())

    def settle_one(n: int) -> tuple[int, list[int]]:
        """A 2-credit hold settled at 1.5 on an account with two lots of 1 credit: its balance and lots after."""
        database = Database(url)
        try:
            with database.unit_of_work() as session:
                account, _ = accounts.create_account(
                    session, name=f"burn {n}", timezone="UTC", plan_monthly_credits=0, plan_cycle="monthly",
                    plan_rollover="none", overdraft=accounts.Overdraft("prepaid"), low_balance_threshold=0, now=NOW)
                for lot in range(2):
                    book.grant(session, account.id, 1000, "purchase", granted_at=NOW + timedelta(seconds=lot),
                               idempotency_key=f"grant-{n}-{lot}")
                hold = book.reserve(session, account.id, 2000, reference=f"m{n}", idempotency_key=f"hold-{n}",
                                    ttl_seconds=600, now=NOW)
                book.settle(session, hold.id, 1500, idempotency_key=f"settle-{n}", now=NOW)
            with database.unit_of_work() as session:
                lots = session.scalars(select(Lot.remaining).where(Lot.account_id == account.id)
                                       .order_by(Lot.granted_at)).all()
                return session.get(Account, account.id).balance, list(lots)
        finally:
            database.dispose()

    try:
        assert "ledger_burn" in functions() and "PERFORM ledger_burn" in functions()["ledger_settle"]
        assert settle_one(1) == (500, [0, 500])
        # when it is upgraded: the burn is ledger_settle's own statement (ledger_burn stays for a settle of the
        # release before still running), the outcome the same
        upgrade(url)
        assert "ledger_burn" not in functions()["ledger_settle"] and "UPDATE lots" in functions()["ledger_settle"]
        assert settle_one(2) == (500, [0, 500])
        # and when it is downgraded: ledger_burn and the call to it are back
        command.downgrade(alembic_config(url), "0023")
        assert "PERFORM ledger_burn" in functions()["ledger_settle"]
        assert settle_one(3) == (500, [0, 500])
    finally:
        engine.dispose()


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_messages_and_holds_go_without_foreign_keys_to_hot_rows_and_index_only_rows_with_a_value(backend, tmp_path,
                                                                                                  request):
    # given a database of the release before (0024), whose foreign keys refuse a message naming no account
    url = (f"sqlite:///{tmp_path / 'creditq.db'}" if backend == "sqlite"
           else request.getfixturevalue("postgres_server").create_database("migrations_lean_writes"))
    upgrade(url, "0024")
    database = Database(url)
    orphan = text("INSERT INTO messages (id, account_id, direction, \"to\", \"from\", body, status, segments, encoding,"
                  " credits_estimated, hold_id, attempts, created_at, updated_at) VALUES (:id, 'acct_gone', 'outbound',"
                  " '+14155550100', '+14155550199', 'hi', 'accepted', 1, 'GSM-7', 0, :hold, 0, :now, :now)")
    orphan_hold = text("INSERT INTO holds (account_id, amount, from_allocation, status, idempotency_key, created_at,"
                       " expires_at) VALUES ('acct_gone', 1, false, 'voided', :key, :now, :now)")

    def index_definitions() -> dict[str, str]:
        query = ("SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'messages'" if backend == "postgres"
                 else "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND tbl_name = 'messages'")
        with database.engine.connect() as connection:
            return {name: definition or "" for name, definition in connection.execute(text(query))}

    try:
        with pytest.raises(IntegrityError), database.engine.begin() as connection:
            connection.execute(orphan, {"id": "msg_before", "hold": None, "now": NOW})
        with pytest.raises(IntegrityError), database.engine.begin() as connection:
            connection.execute(orphan_hold, {"key": "before", "now": NOW})
        # when it is upgraded
        upgrade(url)
        # then such rows go in (shared.ledger.verify reports them), the campaign's, user's and resend's indexes hold
        # only the rows that have a value, and a second resend of one original is still refused
        with database.engine.begin() as connection:
            connection.execute(orphan, {"id": "msg_orphan", "hold": 10**9, "now": NOW})
            connection.execute(orphan_hold, {"key": "orphan", "now": NOW})
        indexes = index_definitions()
        for name, column in [("ix_messages_in_campaign_created", "campaign_id"), ("ix_messages_by_user_created",
                             "user_id"), ("ix_messages_reprocessed_from", "reprocessed_from")]:
            assert f"{column} IS NOT NULL" in indexes[name].replace('"', "")
        assert "ix_messages_campaign_created" not in indexes and "ix_messages_user_created" not in indexes
        resend = text("UPDATE messages SET reprocessed_from = 'msg_orphan' WHERE id = :id")
        with database.engine.begin() as connection:
            connection.execute(orphan, {"id": "msg_resend", "hold": None, "now": NOW})
            connection.execute(orphan, {"id": "msg_resend_2", "hold": None, "now": NOW})
            connection.execute(resend, {"id": "msg_resend"})
        with pytest.raises(IntegrityError), database.engine.begin() as connection:
            connection.execute(resend, {"id": "msg_resend_2"})
        # and when it is downgraded (the rows naming no account gone first), the foreign keys are back
        with database.engine.begin() as connection:
            connection.execute(text("DELETE FROM messages"))
            connection.execute(text("DELETE FROM holds"))
        command.downgrade(alembic_config(url), "0024")
        with pytest.raises(IntegrityError), database.engine.begin() as connection:
            connection.execute(orphan, {"id": "msg_after", "hold": None, "now": NOW})
        with pytest.raises(IntegrityError), database.engine.begin() as connection:
            connection.execute(orphan_hold, {"key": "after", "now": NOW})
        indexes = index_definitions()
        assert "ix_messages_campaign_created" in indexes and "ix_messages_user_created" in indexes
        assert "ix_messages_reprocessed_from" not in indexes
        account_id = open_account(database, "Back")  # the full unique constraint is back in its place
        owned = text(str(orphan).replace("'acct_gone'", ":account"))
        with database.engine.begin() as connection:
            for message_id in ("msg_original", "msg_one", "msg_two"):
                connection.execute(owned, {"id": message_id, "hold": None, "now": NOW, "account": account_id})
            connection.execute(text("UPDATE messages SET reprocessed_from = 'msg_original' WHERE id = 'msg_one'"))
        with pytest.raises(IntegrityError), database.engine.begin() as connection:
            connection.execute(text("UPDATE messages SET reprocessed_from = 'msg_original' WHERE id = 'msg_two'"))
    finally:
        database.dispose()


@pytest.mark.postgres
def test_the_foreign_keys_go_without_holding_the_sends_behind_a_long_transaction_on_accounts(postgres_server):
    # given a database at 0024 and a long transaction that has read the accounts (a report, a month-end batch)
    url = postgres_server.create_database("migrations_lean_locks")
    upgrade(url, "0024")
    database = Database(url)
    account_id = open_account(database, "Busy")
    libpq = url.replace("postgresql+psycopg://", "postgresql://")
    send = ("INSERT INTO messages (id, account_id, direction, \"to\", \"from\", body, status, segments, encoding,"
            " credits_estimated, attempts, created_at, updated_at) VALUES (%s, %s, 'outbound', '+14155550100',"
            " '+14155550199', 'hi', 'accepted', 1, 'GSM-7', 0, 0, now(), now())")
    try:
        with psycopg.connect(libpq) as report, psycopg.connect(libpq, autocommit=True) as sender:
            report.execute("SELECT count(*) FROM accounts")  # its lock on the table lasts until it ends
            # when the upgrade runs meanwhile
            upgrading = threading.Thread(target=upgrade, args=(url,))
            upgrading.start()
            wait_until = time.monotonic() + 60
            while not sender.execute("SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'ALTER TABLE%%'"
                                     " AND wait_event_type = 'Lock'").fetchone()[0]:
                assert time.monotonic() < wait_until, "the upgrade never waited for the report's lock"
                time.sleep(0.05)
            # then a send still goes in while the report runs: a waiting ALTER gives the table back within its
            # lock timeout (in one transaction, it would keep `messages` locked until the report ended)
            sender.execute("SET statement_timeout = '20s'")
            for n in range(3):
                sender.execute(send, (f"msg_during_{n}", account_id))
                time.sleep(0.3)
            assert upgrading.is_alive()  # still waiting for the report
            report.rollback()
            upgrading.join(timeout=60)
        # and once the report ended, the upgrade finished: the foreign keys are gone
        assert not upgrading.is_alive()
        with psycopg.connect(libpq) as check:
            keys = {name for (name,) in check.execute(
                "SELECT conname FROM pg_constraint WHERE conrelid IN ('messages'::regclass, 'holds'::regclass)")}
        assert not keys & {"fk_messages_account_id_accounts", "fk_messages_hold_id_holds",
                           "fk_holds_account_id_accounts", "uq_messages_reprocessed_from"}
    finally:
        database.dispose()


@pytest.mark.postgres
@pytest.mark.parametrize("function, revision, before", [("take_early_statuses", "0026", "0025"),
                                                        ("early_statuses_waiting", "0030", "0029")])
def test_a_sid_function_comes_with_its_migration_as_the_models_make_it_and_goes_with_its_downgrade(
        postgres_server, function, revision, before):
    # given a database upgraded to the head, and one the models made
    migrated, made = (postgres_server.create_database(f"{name}_{revision}") for name in ("migrations", "models"))
    upgrade(migrated)
    made_engine = create_engine(made)
    Base.metadata.create_all(made_engine)

    def source(engine) -> str | None:
        with engine.connect() as connection:
            return connection.scalar(text("SELECT prosrc FROM pg_proc WHERE proname = :name"), {"name": function})

    engine = create_engine(migrated)
    try:
        # then both have the function, alike
        assert source(engine) is not None and source(engine) == source(made_engine)
        # and when the migrated one is downgraded to the revision before its own, the function goes
        command.downgrade(alembic_config(migrated), before)
        assert source(engine) is None
    finally:
        engine.dispose()
        made_engine.dispose()


@pytest.mark.postgres
def test_ledger_reserve_comes_with_0027_as_the_models_make_it_and_its_downgrade_restores_the_one_before(
        postgres_server):
    # given a database upgraded to the head, and one the models made
    migrated, made = (postgres_server.create_database(name) for name in ("migrations_reserve", "models_reserve"))
    upgrade(migrated)
    engines = [create_engine(url) for url in (migrated, made)]
    Base.metadata.create_all(engines[1])

    def source(engine) -> str:
        with engine.connect() as connection:
            return connection.scalar(text("SELECT prosrc FROM pg_proc WHERE proname = 'ledger_reserve'"))

    def locks_the_account_last(engine) -> bool:
        return source(engine).index("INSERT INTO holds") < source(engine).index("UPDATE accounts")

    try:
        # then the head's function is the models' own, which inserts the hold before it updates the account
        assert source(engines[0]) == source(engines[1]) and locks_the_account_last(engines[0])
        # and when the head is downgraded to 0026, the function updates the account first again, as it did there
        command.downgrade(alembic_config(migrated), "0026")
        assert not locks_the_account_last(engines[0])
    finally:
        for engine in engines:
            engine.dispose()


@pytest.mark.parametrize("dialect", ["sqlite", "postgres"])
def test_0028_indexes_unresolved_holds_for_the_sweep_drops_the_reference_index_and_its_downgrade_restores_them(
        dialect, tmp_path, request):
    # given a database upgraded to the head
    url = (f"sqlite:///{tmp_path / 'holds.db'}" if dialect == "sqlite"
           else request.getfixturevalue("postgres_server").create_database("migrations_holds"))
    upgrade(url)
    engine = create_engine(url)

    def indexes() -> dict[str, tuple[list[str], str]]:
        return {index["name"]: (index["column_names"],
                                str(index.get("dialect_options", {}).get(f"{engine.dialect.name}_where")))
                for index in inspect(engine).get_indexes("holds")}

    try:
        # then the sweep's index has the unresolved holds alone, and neither it nor any other is led by the status
        columns, where = indexes()["ix_holds_unresolved_expires_at"]
        assert columns == ["expires_at"] and "resolved_at IS NULL" in where
        assert [name for name, (columns, _) in indexes().items() if columns[0] in ("status", "reference")] == []
        # and when it is downgraded to 0027, its indexes are back
        command.downgrade(alembic_config(url), "0027")
        engine.dispose()
        assert indexes()["ix_holds_pending_expiry"][0] == ["status", "expires_at"]
        assert indexes()["ix_holds_reference"][0] == ["reference"]
        assert "ix_holds_unresolved_expires_at" not in indexes()
    finally:
        engine.dispose()


@pytest.mark.parametrize("dialect", ["sqlite", "postgres"])
def test_0032_drops_the_entries_foreign_keys_and_gates_settlements_in_their_update_and_its_downgrade_restores_both(
        dialect, tmp_path, request):
    # given a database upgraded to the head, and on PostgreSQL one the models made
    if dialect == "sqlite":
        url, made = f"sqlite:///{tmp_path / 'entries.db'}", None
    else:
        url, made = (request.getfixturevalue("postgres_server").create_database(name)
                     for name in ("migrations_entries", "models_entries"))
    upgrade(url)
    engines = [create_engine(url)] + ([create_engine(made)] if made else [])
    if made:
        Base.metadata.create_all(engines[1])

    def referred() -> set[str]:
        engines[0].dispose()
        return {key["referred_table"] for key in inspect(engines[0]).get_foreign_keys("entries")}

    def settle_source(engine) -> str:
        with engine.connect() as connection:
            return connection.scalar(text("SELECT prosrc FROM pg_proc WHERE proname = 'ledger_settle'"))

    gate_first = "h.status IN ('pending', 'expired')"  # the SELECT before every settlement, 0008 to 0031
    try:
        # then an entry's account and hold are not foreign keys (its user still is), and on PostgreSQL the head's
        # ledger_settle is the models' own, with no gate before its statements
        assert referred() == {"users"}
        if made:
            assert settle_source(engines[0]) == settle_source(engines[1])
            assert gate_first not in settle_source(engines[0])
        # and when it is downgraded to 0031, the keys and that function are back
        command.downgrade(alembic_config(url), "0031")
        assert referred() == {"accounts", "holds", "users"}
        if made:
            assert gate_first in settle_source(engines[0])
    finally:
        for engine in engines:
            engine.dispose()
