"""book.reserve's `then` (PostgreSQL): the caller's statement runs in the reservation's round trip, with a hold only."""

import psycopg
import pytest
from sqlalchemy import select

from shared.errors import InsufficientCredits
from shared.ledger import book
from shared.models import Account, Hold, Message
from tests.integration.ledger.test_reserve_many import NOW, account_with

pytestmark = pytest.mark.postgres

# what a claim runs after its reservation: its message takes the hold it was answered
MARK = "UPDATE messages SET hold_id = held.id FROM held WHERE messages.id = %s"


def account_and_message(database, credits_mc: int, *, expiring_mc: int = 0) -> str:
    account_id = account_with(database, credits_mc, expiring_mc=expiring_mc)
    with database.unit_of_work() as session:
        session.add(Message(id=f"msg_{account_id}", account_id=account_id, to="+12125550101", from_="+14155550000",
                            body="Hi", status="accepted", created_at=NOW, updated_at=NOW))
    return account_id


def reserve(database, account_id: str, amount_mc: int, key: str) -> book.HoldView:
    with database.unit_of_work() as session:
        return book.reserve(session, account_id, amount_mc, reference=key, idempotency_key=key, ttl_seconds=900,
                            now=NOW, then=(MARK, (f"msg_{account_id}",)))


def mark_of(database, account_id: str) -> int | None:
    """The hold the account's message took."""
    with database.unit_of_work() as session:
        return session.scalar(select(Message.hold_id).where(Message.id == f"msg_{account_id}"))


def unmark(database, account_id: str) -> None:
    with database.unit_of_work() as session:
        session.get(Message, f"msg_{account_id}").hold_id = None


def test_the_statement_runs_with_the_hold_in_the_one_round_trip_of_the_reservation(postgres_database, monkeypatch):
    # given an account with 5 credits, and every statement psycopg is given recorded
    account_id = account_and_message(postgres_database, 5000)
    statements = []
    execute = psycopg.Cursor.execute
    monkeypatch.setattr(psycopg.Cursor, "execute", lambda cursor, query, *args, **kwargs: (
        statements.append(str(query)), execute(cursor, query, *args, **kwargs))[1])

    # when 2 credits are held with a statement to run after
    hold = reserve(postgres_database, account_id, 2000, "first")

    # then the statement ran with that hold, in the same statement as the reservation, and in no other
    assert mark_of(postgres_database, account_id) == hold.id
    assert [MARK in sql for sql in statements if "ledger_reserve" in sql or "UPDATE messages" in sql] == [True]


def test_a_replay_runs_it_with_the_first_hold_and_a_refusal_not_at_all(postgres_database):
    # given an account with 5 credits, 2 of them held
    account_id = account_and_message(postgres_database, 5000)
    first = reserve(postgres_database, account_id, 2000, "first")
    unmark(postgres_database, account_id)

    # when the same key is replayed, the statement runs with the first hold
    assert reserve(postgres_database, account_id, 2000, "first").id == first.id
    assert mark_of(postgres_database, account_id) == first.id

    # when a reservation is refused
    unmark(postgres_database, account_id)
    with pytest.raises(InsufficientCredits):
        reserve(postgres_database, account_id, 4000, "too much")

    # then the statement did not run, and no second hold exists
    assert mark_of(postgres_database, account_id) is None
    with postgres_database.unit_of_work() as session:
        assert session.scalars(select(Hold.idempotency_key)).all() == ["first"]


def test_after_an_expiry_is_written_first_the_statement_runs_with_the_hold(postgres_database):
    # given an account with 5 lasting credits and 3 that expired an hour ago, the expiry not written yet
    account_id = account_and_message(postgres_database, 5000, expiring_mc=3000)

    # when 2 credits are held with a statement to run after
    hold = reserve(postgres_database, account_id, 2000, "after expiry")

    # then the expiry was written, the hold made, and the statement ran with it
    with postgres_database.unit_of_work() as session:
        account = session.get(Account, account_id)
        assert (account.balance, account.held) == (5000, 2000)
        assert account.next_expiry_at is None or account.next_expiry_at > NOW
    assert mark_of(postgres_database, account_id) == hold.id
