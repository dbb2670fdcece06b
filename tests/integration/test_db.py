"""Units of work and read-only sessions on SQLite and PostgreSQL: a read never waits for a writer, and a
write inside a read fails loudly instead of being dropped."""

import threading
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import (
    Column,
    DateTime,
    Integer,
    MetaData,
    String,
    Table,
    bindparam,
    create_engine,
    func,
    select,
    text,
    update,
)
from sqlalchemy.exc import DBAPIError, IntegrityError, InvalidRequestError, OperationalError, StatementError
from sqlalchemy.orm import Session
from sqlalchemy.pool import NullPool

from shared.config import load_settings
from shared.db import Database, copy_rows, run
from shared.ledger import book  # its PL/pgSQL functions come with the schema once it is imported
from shared.ledger.accounts import Overdraft, create_account
from shared.models import Account, Campaign, CampaignRecipient
from tests.support.statements import statements_sent


@pytest.fixture
def accounts(database):
    with database.unit_of_work() as session:
        session.add(Account(id="acct_1", name="Realty"))
    return database


def test_a_read_sees_the_last_commit_while_a_writer_holds_its_transaction_open(accounts):
    writing, reader_done = threading.Event(), threading.Event()
    reader_finished_first = []

    def long_writer():
        with accounts.unit_of_work() as session:
            session.execute(update(Account).values(name="Renamed, not committed yet"))
            session.flush()
            writing.set()
            reader_done.wait(timeout=60)
            reader_finished_first.append(reader_done.is_set())

    writer = threading.Thread(target=long_writer)
    writer.start()
    writing.wait(timeout=60)
    with accounts.read_only() as session:
        name = session.scalar(select(Account.name))
    reader_done.set()
    writer.join()

    assert name == "Realty"
    assert reader_finished_first == [True]  # the read did not queue behind the open write
    with accounts.read_only() as session:
        assert session.scalar(select(Account.name)) == "Renamed, not committed yet"


def test_a_write_inside_a_read_fails_and_changes_nothing(accounts):
    with pytest.raises(DBAPIError, match="read.?only"):
        with accounts.read_only() as session:
            session.execute(update(Account).values(name="Sneaked in"))

    with accounts.read_only() as session:
        assert session.scalar(select(Account.name)) == "Realty"


def test_a_unit_of_work_after_a_read_on_the_same_connection_writes(accounts):
    for name in ("First", "Second"):
        with accounts.read_only() as session:
            session.scalar(select(Account.name))
        with accounts.unit_of_work() as session:
            session.execute(update(Account).values(name=name))

    with accounts.read_only() as session:
        assert session.scalar(select(Account.name)) == "Second"


@pytest.mark.postgres
def test_a_database_url_naming_a_unix_socket_directory_connects_as_libpq_would(postgres_server, tmp_path):
    # given DATABASE_URL with no host but the server's socket directory in ?host=, as libpq takes it
    url = f"postgresql://postgres@/postgres?host={postgres_server.directory}&port={postgres_server.port}"

    # when creditq reads its settings and opens the database
    database = Database(load_settings({"CREDITQ_DATA_DIR": str(tmp_path), "DATABASE_URL": url}).database_url)
    try:
        with database.read_only() as session:
            # then it talks to the server over the socket
            assert session.scalar(text("SELECT inet_server_addr() IS NULL")) is True  # no TCP address: the socket
    finally:
        database.dispose()


def test_copied_rows_read_back_as_written_json_of_any_text_and_size_included(database):
    # given recipients whose fields hold text of every script, quotes, tabs and newlines, and an integer past 64 bits
    fields = [{"name": "Zoë \"Z\" O'Neil\tjr\n", "city": "東京 ✓", "n": 2**70 + 1}, {"empty": ""}, {}]
    with database.unit_of_work() as session:
        session.add(Account(id="acct_1", name="Realty"))
        now = datetime.now(UTC)
        session.add(Campaign(id="cmp_1", account_id="acct_1", name="c", from_="+14155550000", status="running",
                             recipients=3, send_at=now, created_at=now, updated_at=now))
        session.flush()
        # when they are copied in (COPY on PostgreSQL)
        copy_rows(session, CampaignRecipient.__table__, [
            {"campaign_id": "cmp_1", "position": index, "to": f"+1415555010{index}", "fields": value,
             "skip_reason": None} for index, value in enumerate(fields)])

    # then each reads back equal to what was written
    with database.unit_of_work() as session:
        assert list(session.scalars(select(CampaignRecipient.fields).order_by(CampaignRecipient.position))) == fields


def test_rows_are_copied_into_a_column_whose_type_a_migration_changed_while_the_process_ran(postgres_database):
    # given a table written by COPY (binary, typed by the catalog) once, through the pool's connection
    database = postgres_database
    table = Table("tallies", MetaData(), Column("id", Integer, primary_key=True), Column("n", Integer),
                  Column("at", DateTime(timezone=True)), Column("note", String(20)))
    table.create(database.engine)
    at = datetime(2026, 11, 29, 3, 0, tzinfo=UTC)
    with database.unit_of_work() as session:
        copy_rows(session, table, [{"id": 1, "n": 7, "at": at, "note": "first"}])

    # when a migration widens a column while the process runs, and a value only the new type holds is copied
    with database.unit_of_work() as session:
        session.execute(text("ALTER TABLE tallies ALTER COLUMN n TYPE BIGINT"))
    with database.unit_of_work() as session:
        copy_rows(session, table, [{"id": 2, "n": 2**40, "at": at, "note": None}])

    # then both rows read back as written
    with database.unit_of_work() as session:
        assert session.execute(select(table).order_by(table.c.id)).all() == [(1, 7, at, "first"), (2, 2**40, at, None)]


def test_run_answers_as_sqlalchemy_does_and_on_postgresql_skips_its_machinery(accounts, database):
    # given prebuilt statements: a read, updates with and without RETURNING, and an update that breaks a NOT NULL
    table = Account.__table__
    touch = update(table).where(table.c.id == bindparam("account_id")).values(name=bindparam("new_name"))
    read = select(table.c.id, table.c.name).where(table.c.id == bindparam("account_id"))
    rename = (update(table).where(table.c.id == bindparam("account_id")).values(name=bindparam("new_name"))
              .returning(table.c.name))
    blank = update(table).where(table.c.id == bindparam("account_id")).values(name=None)
    with statements_sent(database) as seen:
        # when each runs through `run` in a unit of work
        with database.unit_of_work() as session:
            connection = session.connection()
            found = run(connection, read, {"account_id": "acct_1"}).one()
            missing = run(connection, read, {"account_id": "acct_none"}).one_or_none()
            count = run(connection, touch, {"account_id": "acct_1", "new_name": "Touched"}).rowcount
            none_touched = run(connection, touch, {"account_id": "acct_none", "new_name": "x"}).rowcount
            row = run(connection, rename, {"account_id": "acct_1", "new_name": "Renamed"}).one()
        with pytest.raises(IntegrityError):
            with database.unit_of_work() as session:
                run(session.connection(), blank, {"account_id": "acct_1"})

    with pytest.raises((InvalidRequestError, StatementError), match="account_id"):  # a parameter left out
        with database.unit_of_work() as session:
            run(session.connection(), read, {})

    # then the answers are SQLAlchemy's: rows by column name, counts, None for no row, its error classes
    assert (found.id, found.name, missing) == ("acct_1", "Realty", None)
    assert (row.name, count, none_touched) == ("Renamed", 1, 0)
    with database.unit_of_work() as session:
        assert session.scalar(select(Account.name).where(Account.id == "acct_1")) == "Renamed"
    # and on PostgreSQL none of them went through SQLAlchemy's execution (on SQLite all did)
    ran_through_sqlalchemy = [s for s in seen if s.startswith(("SELECT ACCOUNTS", "UPDATE"))]
    assert len(ran_through_sqlalchemy) == (0 if database.is_postgres else 6)


def test_run_reads_an_encrypted_column_as_its_plain_value(accounts, database):
    # given an account whose Twilio token is stored encrypted
    with database.unit_of_work() as session:
        session.get(Account, "acct_1").twilio_auth_token = "token-in-plain"
    with database.unit_of_work() as session:
        stored = session.connection().exec_driver_sql(
            "SELECT twilio_auth_token FROM accounts WHERE id = 'acct_1'").scalar()

    # when a prebuilt statement reads it through `run`
    table = Account.__table__
    read = select(table.c.id, table.c.twilio_auth_token).where(table.c.id == bindparam("account_id"))
    with database.unit_of_work() as session:
        row = run(session.connection(), read, {"account_id": "acct_1"}).one()

    # then it is the plain token, as SQLAlchemy's own read gives it, though the column holds something else
    assert stored != "token-in-plain" and row.twilio_auth_token == "token-in-plain"


@pytest.mark.postgres
def test_statements_on_psycopgs_cursor_fail_with_sqlalchemys_errors_and_a_dead_connection_is_replaced(
        postgres_database):
    database = postgres_database
    now = datetime.now(UTC)
    with database.unit_of_work() as session:
        account, _ = create_account(session, name="Realty", timezone="UTC", plan_monthly_credits=0,
                                    plan_cycle="monthly", plan_rollover="none", overdraft=Overdraft("postpaid"),
                                    low_balance_threshold=0, now=now - timedelta(days=1))

    # given the account's row locked by another transaction, and a ledger call that will not wait for it
    with database.engine.connect() as other:
        other.execute(text("SELECT 1 FROM accounts WHERE id = :id FOR UPDATE"), {"id": account.id})
        # when the reservation (the ledger function, on psycopg's cursor) meets the lock
        with pytest.raises(OperationalError, match="lock"):
            with database.unit_of_work() as session:
                session.execute(text("SET LOCAL lock_timeout = '100ms'"))
                book.reserve(session, account.id, 1000, idempotency_key="k1", ttl_seconds=60, now=now)
        other.rollback()

    # and when a statement's backend is terminated under it
    with pytest.raises(OperationalError) as lost:
        with database.unit_of_work() as session:
            pid = run(session.connection(), select(func.pg_backend_pid())).scalar()
            with database.engine.connect() as other:  # and waits until it is gone (the signal is asynchronous)
                other.execute(text("SELECT pg_terminate_backend(:pid, 10000)"), {"pid": pid})
            run(session.connection(), select(Account.__table__.c.name).where(Account.__table__.c.id == bindparam(
                "account_id")), {"account_id": account.id})

    # then each is SQLAlchemy's error (what the intake answers 503 for), the dead connection was invalidated, and the
    # next unit of work runs on a fresh one
    assert lost.value.connection_invalidated and "terminat" in str(lost.value.orig)  # the statement's own error
    with database.unit_of_work() as session:
        assert run(session.connection(), select(func.pg_backend_pid())).scalar() != pid
        book.reserve(session, account.id, 1000, idempotency_key="k2", ttl_seconds=60, now=now)


def test_a_connection_unit_of_work_commits_its_statements_and_makes_no_session_until_asked(accounts, monkeypatch):
    # Given a count of the ORM sessions made
    made = []
    session_init = Session.__init__
    monkeypatch.setattr(Session, "__init__", lambda session, *args, **kwargs: (
        made.append(session), session_init(session, *args, **kwargs))[1])

    # When a step runs a Core statement only
    with accounts.connection_unit_of_work() as work:
        work.connection.execute(update(Account).values(name="Renamed"))

    # Then it is committed, and no session was made for it
    assert made == []
    with accounts.read_only() as session:
        assert session.scalar(select(Account.name)) == "Renamed"


def test_a_session_asked_for_joins_the_transaction_and_commits_or_rolls_back_with_its_statements(accounts):
    # Given a step that writes through its connection and through the session it asks for
    def step(work, *, fail: bool) -> None:
        work.connection.execute(update(Account).values(name=f"Renamed, fail={fail}"))
        work.session.add(Account(id=f"acct_{fail}", name="Added"))
        assert work.session.connection() is work.connection  # one transaction for both
        if fail:
            raise RuntimeError("the step failed")

    # When one such step fails, both of its writes are rolled back
    with pytest.raises(RuntimeError):
        with accounts.connection_unit_of_work() as work:
            step(work, fail=True)
    with accounts.read_only() as session:
        assert session.execute(select(Account.id, Account.name)).all() == [("acct_1", "Realty")]

    # When it ends normally, both are committed: the session's object flushed as the block ended
    with accounts.connection_unit_of_work() as work:
        step(work, fail=False)
    with accounts.read_only() as session:
        assert sorted(session.execute(select(Account.id, Account.name)).all()) == [
            ("acct_1", "Renamed, fail=False"), ("acct_False", "Added")]


@pytest.mark.postgres
def test_a_pool_that_meets_a_dead_connection_on_psycopgs_cursor_replaces_the_others_it_held(postgres_database):
    # given a pool holding two idle connections, and a restart that ended both sessions
    database = postgres_database
    with database.engine.connect() as first, database.engine.connect() as second:
        pids = [run(held, select(func.pg_backend_pid())).scalar() for held in (first, second)]
    outside = create_engine(database.url, poolclass=NullPool)  # a session of its own, not one of the pool's
    with outside.connect() as other:
        other.execute(text("SELECT pg_terminate_backend(pid, 10000) FROM unnest(CAST(:pids AS int[])) AS pid"),
                      {"pids": pids})
    outside.dispose()

    # when a statement on psycopg's cursor meets the first dead connection
    with pytest.raises(OperationalError):
        with database.unit_of_work() as session:
            run(session.connection(), select(func.pg_backend_pid())).scalar()

    # then the next unit of work runs on a fresh connection, not on the other dead one
    with database.unit_of_work() as session:
        assert run(session.connection(), select(func.pg_backend_pid())).scalar() not in pids
