"""book.settle's `then` (PostgreSQL): the caller's statement runs in the settlement's round trip, when it settles."""

from datetime import timedelta

import psycopg
import pytest
from sqlalchemy import select

from shared.ledger import book
from shared.models import Account, Message
from tests.integration.ledger.test_reserve_many import NOW, account_with

pytestmark = pytest.mark.postgres

# what a message's settlement runs after it: the message takes the charge its hold was settled for
CHARGE = "UPDATE messages SET credits_charged = settled.settled_amount FROM settled WHERE messages.id = %s"


def held_message(database, *, expiring_mc: int = 0, held_at=NOW) -> tuple[str, int]:
    """(account, hold): an account with 5 lasting credits (and `expiring_mc` that expired an hour before NOW), and
    a message holding 2 of them since `held_at`."""
    account_id = account_with(database, 5000, expiring_mc=expiring_mc)
    with database.unit_of_work() as session:
        hold = book.reserve(session, account_id, 2000, reference="m", idempotency_key=f"hold:{account_id}",
                            ttl_seconds=86_400, now=held_at)
        session.add(Message(id=f"msg_{account_id}", account_id=account_id, to="+12125550101", from_="+14155550000",
                            body="Hi", status="delivered", hold_id=hold.id, created_at=held_at, updated_at=held_at))
    return account_id, hold.id


def settle(database, account_id: str, hold_id: int, actual_mc: int) -> book.Settlement:
    with database.unit_of_work() as session:
        return book.settle(session, hold_id, actual_mc, carrier_fee_mc=500, idempotency_key=f"usage:{account_id}",
                           now=NOW, then=(CHARGE, (f"msg_{account_id}",)))


def charge_of(database, account_id: str) -> int | None:
    with database.unit_of_work() as session:
        return session.scalar(select(Message.credits_charged).where(Message.id == f"msg_{account_id}"))


def test_the_statement_runs_with_the_settled_hold_in_the_one_round_trip_of_the_settlement(postgres_database,
                                                                                         monkeypatch):
    # given a message holding 2 credits, and every statement psycopg is given recorded
    account_id, hold_id = held_message(postgres_database)
    statements = []
    execute = psycopg.Cursor.execute
    monkeypatch.setattr(psycopg.Cursor, "execute", lambda cursor, query, *args, **kwargs: (
        statements.append(str(query)), execute(cursor, query, *args, **kwargs))[1])

    # when the hold is settled for 1 credit and a carrier fee of half a credit, with a statement to run after
    settlement = settle(postgres_database, account_id, hold_id, 1000)

    # then the statement read what the hold was settled for, in the settlement's own statement and in no other
    assert (settlement.charged, settlement.replayed) == (1500, False)
    assert charge_of(postgres_database, account_id) == 1500
    assert [CHARGE in sql for sql in statements if "ledger_settle" in sql or "UPDATE messages" in sql] == [True]


def test_a_replay_does_not_run_it_and_says_so(postgres_database):
    # given a hold settled once, and its message's charge wiped
    account_id, hold_id = held_message(postgres_database)
    settle(postgres_database, account_id, hold_id, 1000)
    with postgres_database.unit_of_work() as session:
        session.get(Message, f"msg_{account_id}").credits_charged = None

    # when the same settlement is replayed
    settlement = settle(postgres_database, account_id, hold_id, 1000)

    # then it answers the first one as a replay, and the statement did not run: its caller writes what it must
    assert (settlement.charged, settlement.replayed) == (1500, True)
    assert charge_of(postgres_database, account_id) is None


def test_after_an_expiry_is_written_first_the_statement_runs_once_with_the_settled_hold(postgres_database):
    # given a message holding 2 credits since before 3 more of the account's credits expired, the expiry not written
    account_id, hold_id = held_message(postgres_database, expiring_mc=3000, held_at=NOW - timedelta(hours=2))

    # when the hold is settled now
    settlement = settle(postgres_database, account_id, hold_id, 1000)

    # then the expiry was written first, the hold settled, and the statement ran with it
    with postgres_database.unit_of_work() as session:
        account = session.get(Account, account_id)
        assert account.next_expiry_at is None or account.next_expiry_at > NOW
        assert account.held == 0
    assert (settlement.charged, settlement.replayed) == (1500, False)
    assert charge_of(postgres_database, account_id) == 1500
