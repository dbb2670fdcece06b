"""How PostgreSQL finds a hold: by its key, whatever it believes of the pending holds.

A statement that names a hold by id and also asks for its status (the settlement function's, a void's, an expiry's,
a renewal's) must be served by the primary key. An index led by the status let the planner scan every pending hold's
entry instead, the dead ones too, whenever it took them to be few: as on a new table, or with statistics taken before
a campaign reserved a hundred thousand of them. PostgreSQL's own counts of each index's scans say which served the
ledger's real calls (the settlement function's statements included), with generic plans, as a long-lived
connection's become.
"""

from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import text
from sqlalchemy.orm import Session

from shared.ledger import accounts, book
from tests.support.index_statistics import flush_statistics, index_counts

pytestmark = pytest.mark.postgres
NOW = datetime(2021, 3, 1, tzinfo=timezone.utc)


def index_scans(reader) -> dict[str, int]:
    return index_counts(reader, "holds", "idx_scan")


def test_every_ledger_call_on_one_hold_scans_its_key_and_the_sweep_only_the_unresolved_holds(postgres_database):
    with postgres_database.engine.connect() as connection, postgres_database.engine.connect() as reader:
        # given an account with pending, settled and voided holds, on a table never analyzed
        session = Session(bind=connection)
        account, _ = accounts.create_account(
            session, name="Acme", timezone="UTC", plan_monthly_credits=0, plan_cycle="monthly", plan_rollover="none",
            overdraft=accounts.Overdraft("prepaid"), low_balance_threshold=0, now=NOW)
        book.grant(session, account.id, 10**9, "purchase", granted_at=NOW, idempotency_key="seed")
        held = [book.reserve(session, account.id, 1_000, idempotency_key=f"h{n}", ttl_seconds=60, now=NOW).id
                for n in range(40)]
        for hold_id in held[:10]:
            book.settle(session, hold_id, 900, idempotency_key=f"s{hold_id}", now=NOW)
        for hold_id in held[10:20]:
            book.void(session, hold_id, now=NOW)
        session.commit()
        connection.execute(text("SET plan_cache_mode = force_generic_plan"))
        flush_statistics(connection)
        before = index_scans(reader)

        # when the ledger settles (and replays the settlement), voids, renews and expires holds, and the sweep
        # looks for due ones once
        later = NOW + timedelta(hours=1)
        book.settle(session, held[20], 900, idempotency_key="settled-now", now=NOW)
        book.settle(session, held[20], 900, idempotency_key="settled-now", now=NOW)
        book.void(session, held[21], now=NOW)
        assert book.renew(session, held[22], expires_at=later)
        due = book.due_holds(session, later + timedelta(minutes=1))
        book.expire(session, due[0], now=later + timedelta(minutes=1))
        session.commit()
        flush_statistics(connection)
        scans = {name: count - before.get(name, 0) for name, count in index_scans(reader).items()}

    # then the holds named by id were found by their key, and the sweep alone read the index of unresolved holds
    assert scans.pop("pk_holds") >= 6, scans
    assert scans.pop("ix_holds_unresolved_expires_at") == 1, scans
    assert set(scans.values()) == {0}, scans
