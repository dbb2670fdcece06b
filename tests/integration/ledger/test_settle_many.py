"""book.settle_many (PostgreSQL): a batch of settlements in one round trip, and the caller's statement (`then`) in it,
reading the holds it settled."""

from datetime import timedelta

import psycopg
import pytest
from sqlalchemy import select

from shared.ledger import book
from shared.models import Account, Entry, Message
from tests.integration.ledger.test_reserve_many import NOW, account_with

pytestmark = pytest.mark.postgres

# what a batch of messages' settlements runs after it: each message takes the charge its hold was settled for
CHARGE = ("UPDATE messages SET credits_charged = settled.settled_amount FROM settled"
          " WHERE messages.hold_id = settled.id AND messages.id = ANY(%s)")


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


def settle(database, held: list[tuple[str, int]], actual_mc: int) -> list[book.Settlement]:
    requests = [book.SettleRequest(hold_id, actual_mc, idempotency_key=f"usage:{account_id}", carrier_fee_mc=500)
                for account_id, hold_id in held]
    with database.unit_of_work() as session:
        return book.settle_many(session, requests, now=NOW,
                                then=(CHARGE, ([f"msg_{account_id}" for account_id, _ in held],)))


def charge_of(database, account_id: str) -> int | None:
    with database.unit_of_work() as session:
        return session.scalar(select(Message.credits_charged).where(Message.id == f"msg_{account_id}"))


def test_a_batch_settles_every_hold_and_runs_the_statement_in_one_round_trip(postgres_database, monkeypatch):
    # given three messages holding 2 credits each, on three accounts, and every statement psycopg is given recorded
    held = [held_message(postgres_database) for _ in range(3)]
    statements = []
    execute = psycopg.Cursor.execute
    monkeypatch.setattr(psycopg.Cursor, "execute", lambda cursor, query, *args, **kwargs: (
        statements.append(str(query)), execute(cursor, query, *args, **kwargs))[1])

    # when their holds are settled in one batch for 1 credit and a carrier fee of half a credit each
    settlements = settle(postgres_database, held, 1000)

    # then each answer is its own hold's, in order; each message took its charge; all in one statement
    assert [(s.hold.id, s.charged, s.balance, s.replayed) for s in settlements] == [
        (hold_id, 1500, 3500, False) for _, hold_id in held]
    assert [charge_of(postgres_database, account_id) for account_id, _ in held] == [1500] * 3
    assert [CHARGE in sql for sql in statements if "ledger_settle" in sql or "UPDATE messages" in sql] == [True]


def test_the_same_account_twice_in_a_batch_is_settled_in_order(postgres_database):
    # given two messages of one account holding 2 credits each (5 in all)
    account_id = account_with(postgres_database, 5000)
    with postgres_database.unit_of_work() as session:
        holds = [book.reserve(session, account_id, 2000, idempotency_key=f"h{n}", ttl_seconds=600, now=NOW).id
                 for n in range(2)]

    # when both are settled in one batch, for 3 credits and for 1
    with postgres_database.unit_of_work() as session:
        settlements = book.settle_many(session, [book.SettleRequest(holds[0], 3000, idempotency_key="u0"),
                                                 book.SettleRequest(holds[1], 1000, idempotency_key="u1")], now=NOW)

    # then the second saw the first's balance, as two calls one after the other would
    assert [(s.charged, s.balance) for s in settlements] == [(3000, 2000), (1000, 1000)]
    with postgres_database.unit_of_work() as session:
        assert [e.balance_after for e in session.scalars(
            select(Entry).where(Entry.account_id == account_id, Entry.kind == "usage").order_by(Entry.id))] == [
            2000, 1000]
        assert (session.get(Account, account_id).balance, session.get(Account, account_id).held) == (1000, 0)


def test_a_replay_in_a_batch_does_not_run_the_statement_for_it_and_says_so(postgres_database):
    # given a hold settled once, its message's charge wiped, and a second message not settled yet
    first, second = held_message(postgres_database), held_message(postgres_database)
    settle(postgres_database, [first], 1000)
    with postgres_database.unit_of_work() as session:
        session.get(Message, f"msg_{first[0]}").credits_charged = None

    # when the first settlement is replayed in a batch with the second's
    replay, settlement = settle(postgres_database, [first, second], 1000)

    # then the replay answers the first settlement and its message is left to its caller; the second settled
    assert (replay.charged, replay.replayed) == (1500, True)
    assert charge_of(postgres_database, first[0]) is None
    assert (settlement.charged, settlement.replayed) == (1500, False)
    assert charge_of(postgres_database, second[0]) == 1500


def test_a_batch_writes_a_due_expiry_first_and_runs_the_statement_once_for_each(postgres_database):
    # given a message holding 2 credits since before 3 more of its account's credits expired (the expiry not
    # written), and a message of another account with nothing due
    due = held_message(postgres_database, expiring_mc=3000, held_at=NOW - timedelta(hours=2))
    other = held_message(postgres_database)

    # when both are settled in one batch
    settlements = settle(postgres_database, [due, other], 1000)

    # then the expiry was written, both holds settled, and each message took its charge once
    with postgres_database.unit_of_work() as session:
        account = session.get(Account, due[0])
        assert account.next_expiry_at is None or account.next_expiry_at > NOW
        assert account.held == 0
        # of the 3 credits that expired, the hold kept 2 and used 1.5 of them: 1.5 lapsed
        assert sum(session.scalars(select(Entry.amount).where(Entry.account_id == due[0], Entry.kind == "expiry"))) \
            == -1500
    assert [(s.hold.id, s.charged, s.replayed) for s in settlements] == [(due[1], 1500, False), (other[1], 1500, False)]
    assert [charge_of(postgres_database, account_id) for account_id in (due[0], other[0])] == [1500, 1500]
