"""book.reserve_many on SQLite and PostgreSQL: holds and their companion writes first, the account row last."""

import threading
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from shared.errors import InsufficientCredits
from shared.ledger import book
from shared.ledger.accounts import Overdraft, create_account
from shared.ledger.expiry import utc
from shared.ledger.verify import verify
from shared.models import Entry, Hold, Message
from tests.support.statements import statements_sent

NOW = datetime(2026, 11, 10, 12, 0, tzinfo=UTC)


def account_with(database, credits_mc: int, *, expiring_mc: int = 0) -> str:
    """A prepaid account with `credits_mc` that never expire and `expiring_mc` that expired an hour before NOW."""
    with database.unit_of_work() as session:
        account, _ = create_account(session, name="Acme", timezone="UTC", plan_monthly_credits=0, plan_cycle="monthly",
                                    plan_rollover="none", overdraft=Overdraft("prepaid"), low_balance_threshold=0,
                                    now=NOW - timedelta(days=2))
        book.grant(session, account.id, credits_mc, "purchase", granted_at=NOW - timedelta(days=2), expires_at=None,
                   idempotency_key=f"g:{account.id}")
        if expiring_mc:
            book.grant(session, account.id, expiring_mc, "bonus", granted_at=NOW - timedelta(days=2),
                       expires_at=NOW - timedelta(hours=1), idempotency_key=f"b:{account.id}")
        return account.id


def requests(*amounts: int, prefix: str = "m") -> list[book.HoldRequest]:
    return [book.HoldRequest(idempotency_key=f"{prefix}{index}", amount=amount, reference=f"{prefix}{index}",
                             expires_at=NOW + timedelta(minutes=15)) for index, amount in enumerate(amounts)]


def message_per_hold(session, account_id: str):
    """What a campaign chunk writes alongside its holds: a message carrying each hold's id."""
    def insert(holds: list[book.HoldView]) -> None:
        session.add_all(Message(id=f"msg_{hold.reference}", account_id=account_id, to="+12125550101",
                                from_="+14155550000", body="Hi", status="accepted", hold_id=hold.id,
                                created_at=NOW, updated_at=NOW) for hold in holds)
        session.flush()
    return insert


def count(database, model) -> int:
    with database.unit_of_work() as session:
        return session.scalar(select(func.count()).select_from(model))


def test_a_batch_writes_its_companions_then_updates_the_account_row_once_last(database):
    account_id = account_with(database, 5000)
    with statements_sent(database) as statements, database.unit_of_work() as session:
        holds = book.reserve_many(session, account_id, requests(1000, 2000), now=NOW,
                                  alongside=message_per_hold(session, account_id))
    account_updates = [index for index, text in enumerate(statements) if text.startswith("UPDATE ACCOUNTS")]
    message_inserts = [index for index, text in enumerate(statements) if text.startswith("INSERT INTO MESSAGES")]
    assert len(account_updates) == 1 and message_inserts and message_inserts[-1] < account_updates[0]
    with database.unit_of_work() as session:
        assert [(m.id, m.hold_id) for m in session.scalars(select(Message).order_by(Message.id))] == [
            ("msg_m0", holds[0].id), ("msg_m1", holds[1].id)]
        assert book.balance(session, account_id, now=NOW).held == 3000
        assert verify(session) == []


def test_a_refused_batch_leaves_neither_its_holds_nor_its_companions_and_the_transaction_goes_on(database):
    account_id = account_with(database, 2500)
    with database.unit_of_work() as session:
        with pytest.raises(InsufficientCredits) as refused:
            book.reserve_many(session, account_id, requests(1000, 2000), now=NOW,
                              alongside=message_per_hold(session, account_id))
        held = book.reserve_many(session, account_id, requests(2000, prefix="parked-instead"), now=NOW)
    assert (refused.value.available, refused.value.required) == (2500, 3000)
    assert (count(database, Message), count(database, Hold)) == (0, 1)
    with database.unit_of_work() as session:
        assert book.balance(session, account_id, now=NOW).held == held[0].amount
        assert verify(session) == []


def test_a_replayed_batch_holds_only_the_new_keys_and_answers_the_first_holds(database):
    account_id = account_with(database, 5000)
    with database.unit_of_work() as session:
        first = book.reserve_many(session, account_id, requests(1000, 1000), now=NOW)
    with database.unit_of_work() as session:
        again = book.reserve_many(session, account_id, requests(1000, 1000, 1000), now=NOW)
    assert [hold.id for hold in again[:2]] == [hold.id for hold in first] and again[2].id not in {h.id for h in first}
    with database.unit_of_work() as session:
        assert book.balance(session, account_id, now=NOW).held == 3000
        assert verify(session) == []


def test_a_batch_of_fresh_keys_holds_without_looking_them_up_and_a_key_used_before_fails_whole(database):
    # given an account with one hold already taken under the key "old0"
    account_id = account_with(database, 5000)
    with database.unit_of_work() as session:
        book.reserve_many(session, account_id, requests(1000, prefix="old"), now=NOW)
    with statements_sent(database) as statements:
        # when a batch says its keys are fresh, once truly and once with that key among them
        with database.unit_of_work() as session:
            held = book.reserve_many(session, account_id, requests(1000, 1000), now=NOW, fresh_keys=True)
        with pytest.raises((IntegrityError, psycopg.errors.IntegrityError)):  # COPY's own error on PostgreSQL
            with database.unit_of_work() as session:
                book.reserve_many(session, account_id, requests(1000, 500, prefix="old"), now=NOW, fresh_keys=True)
    # then the fresh batch held both without reading holds first, and the other changed nothing: no hold is
    # answered twice and the account holds what the first two batches took
    assert len({hold.id for hold in held}) == 2
    assert not any(statement.startswith("SELECT") and "IDEMPOTENCY_KEY" in statement for statement in statements)
    with database.unit_of_work() as session:
        assert book.balance(session, account_id, now=NOW).held == 3000
        assert session.scalar(select(func.count()).select_from(Hold)) == 3
        assert verify(session) == []


def test_an_expiry_due_is_written_before_the_batch_holds(database):
    account_id = account_with(database, 2000, expiring_mc=3000)
    with database.unit_of_work() as session:
        with pytest.raises(InsufficientCredits) as refused:
            book.reserve_many(session, account_id, requests(1500, 1000), now=NOW)
    with database.unit_of_work() as session:
        book.reserve_many(session, account_id, requests(1500), now=NOW)
    assert (refused.value.available, refused.value.required) == (2000, 2500)  # not 5000: the bonus lapsed first
    with database.unit_of_work() as session:
        expiries = list(session.scalars(select(Entry).where(Entry.kind == "expiry")))
        view = book.balance(session, account_id, now=NOW)
        assert [(e.amount, utc(e.at)) for e in expiries] == [(-3000, NOW - timedelta(hours=1))]
        assert (view.balance, view.held) == (2000, 1500)
        assert verify(session) == []


@pytest.mark.postgres
def test_a_second_batch_inserts_while_the_first_still_holds_the_account_row(postgres_database):
    database = postgres_database
    account_id = account_with(database, 10_000)
    first_claimed, second_inserted, release_first = threading.Event(), threading.Event(), threading.Event()

    def first_batch() -> None:
        with database.unit_of_work() as session:
            book.reserve_many(session, account_id, requests(1000, 1000, prefix="a"), now=NOW)
            first_claimed.set()
            release_first.wait(60)  # the account row stays locked until this commits

    def second_batch() -> None:
        with database.unit_of_work() as session:
            book.reserve_many(session, account_id, requests(1000, prefix="b"), now=NOW,
                              alongside=lambda holds: second_inserted.set())

    first = threading.Thread(target=first_batch)
    first.start()
    first_claimed.wait(60)
    second = threading.Thread(target=second_batch)
    second.start()
    inserted_beside = second_inserted.wait(60)
    release_first.set()
    first.join()
    second.join()
    assert inserted_beside  # its holds were inserted while the first batch's transaction held the account row
    with database.unit_of_work() as session:
        assert book.balance(session, account_id, now=NOW).held == 3000
        assert verify(session) == []
