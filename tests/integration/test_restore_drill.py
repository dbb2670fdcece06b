"""The restore drill the README's backups section describes: pg_dump a live ledger, restore it into a fresh
database, and find the same money there — `creditq ledger verify` clean, every balance equal."""

import subprocess
import sys
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from shared.db import Database
from shared.ledger import accounts, book
from shared.migrate import check, upgrade
from shared.models import Account, Entry, Hold, Lot
from tests.support.stack import ROOT

pytestmark = pytest.mark.postgres

NOW = datetime(2026, 11, 1, tzinfo=UTC)


def busy_ledger(database: Database) -> None:
    """Three accounts with grants, settled and voided holds, one hold still pending and a lot that expired."""
    with database.unit_of_work() as session:
        for n in range(3):
            account, _ = accounts.create_account(
                session, name=f"Account {n}", timezone="America/Chicago", plan_monthly_credits=0,
                plan_cycle="monthly", plan_rollover="none", overdraft=accounts.Overdraft("prepaid"),
                low_balance_threshold=0, now=NOW)
            book.grant(session, account.id, 50_000, "purchase", granted_at=NOW, idempotency_key=f"buy:{n}")
            book.grant(session, account.id, 7_000, "bonus", granted_at=NOW, idempotency_key=f"bonus:{n}",
                       expires_at=NOW + timedelta(days=1))
            for step in range(5):
                hold = book.reserve(session, account.id, 2_000, idempotency_key=f"r:{n}:{step}", ttl_seconds=900,
                                    now=NOW + timedelta(days=2, minutes=step))
                if step == 4:
                    book.void(session, hold.id, now=NOW + timedelta(days=2))
                else:
                    book.settle(session, hold.id, 1_500 + 500 * step, idempotency_key=f"s:{n}:{step}",
                                now=NOW + timedelta(days=2, minutes=step))
            book.reserve(session, account.id, 3_000, idempotency_key=f"pending:{n}", ttl_seconds=900,
                         now=NOW + timedelta(days=2, hours=1))


def money(url: str) -> tuple:
    database = Database(url)
    try:
        with database.unit_of_work() as session:
            return (sorted(session.execute(select(Account.id, Account.balance, Account.held)).all()),
                    sorted(session.execute(select(Lot.id, Lot.remaining)).all()),
                    sorted(session.execute(select(Hold.id, Hold.status, Hold.amount)).all()),
                    sorted(session.execute(select(Entry.idempotency_key, Entry.amount, Entry.balance_after)).all()))
    finally:
        database.dispose()


def ledger_verify(url: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "creditq", "ledger", "verify"], cwd=ROOT, capture_output=True,
                          text=True, timeout=120, env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT),
                                                       "DATABASE_URL": url, "CREDITQ_DATA_DIR": "/tmp/creditq-drill"})


def test_a_dump_restored_into_a_fresh_database_has_the_same_clean_ledger(postgres_server):
    # given a migrated database with a busy, clean ledger
    source = postgres_server.create_database("drill_source")
    upgrade(source)
    database = Database(source)
    busy_ledger(database)
    database.dispose()
    assert ledger_verify(source).returncode == 0

    # when it is dumped (pg_dump's custom format) and restored into a fresh, empty database
    archive = postgres_server.dump("drill_source", archive=True)
    restored = postgres_server.create_database("drill_restored")
    postgres_server.restore("drill_restored", archive)

    # then the restored database has the schema the models describe, the same money, and a clean ledger
    check(restored)
    assert money(restored) == money(source)
    verified = ledger_verify(restored)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert verified.stdout.strip().endswith("clean")
    # and the restored copy takes new work: a reservation runs the ledger's PL/pgSQL function, restored with it
    database = Database(restored)
    with database.unit_of_work() as session:
        account_id = session.scalars(select(Account.id).order_by(Account.id)).first()
        book.reserve(session, account_id, 1_000, idempotency_key="after-restore", ttl_seconds=900,
                     now=NOW + timedelta(days=3))
    database.dispose()
    assert ledger_verify(restored).returncode == 0
