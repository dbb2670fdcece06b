"""book.reserve_many: a campaign chunk's holds, one account-row reservation for the batch."""

from datetime import UTC, datetime, timedelta

import pytest

from shared.errors import InsufficientCredits
from shared.ledger import book
from shared.ledger.accounts import Overdraft, create_account
from shared.ledger.verify import verify

NOW = datetime(2026, 11, 10, 12, 0, tzinfo=UTC)


def account_with(database, credits_mc: int) -> str:
    with database.unit_of_work() as session:
        account, _ = create_account(session, name="Acme", timezone="UTC", plan_monthly_credits=0, plan_cycle="monthly",
                                    plan_rollover="none", overdraft=Overdraft("prepaid"), low_balance_threshold=0,
                                    now=NOW)
        book.grant(session, account.id, credits_mc, "purchase", granted_at=NOW, idempotency_key=f"g:{account.id}")
        return account.id


def requests(*amounts: int, prefix: str = "m") -> list[book.HoldRequest]:
    return [book.HoldRequest(idempotency_key=f"{prefix}{index}", amount=amount, reference=f"{prefix}{index}",
                               expires_at=NOW + timedelta(minutes=15)) for index, amount in enumerate(amounts)]


def test_a_batch_makes_one_pending_hold_per_request(sqlite_database):
    account_id = account_with(sqlite_database, 5000)
    with sqlite_database.unit_of_work() as session:
        holds = book.reserve_many(session, account_id, requests(1000, 2000), now=NOW)
    assert [(h.amount, h.status, h.reference) for h in holds] == [(1000, "pending", "m0"), (2000, "pending", "m1")]
    with sqlite_database.unit_of_work() as session:
        assert book.balance(session, account_id, now=NOW).held == 3000
        assert verify(session) == []


def test_a_batch_that_does_not_fit_holds_nothing(sqlite_database):
    account_id = account_with(sqlite_database, 2500)
    with pytest.raises(InsufficientCredits) as refused:
        with sqlite_database.unit_of_work() as session:
            book.reserve_many(session, account_id, requests(1000, 2000), now=NOW)
    assert (refused.value.available, refused.value.required) == (2500, 3000)
    with sqlite_database.unit_of_work() as session:
        assert book.balance(session, account_id, now=NOW).held == 0


def test_a_replayed_batch_answers_the_first_holds_and_holds_only_the_new_ones(sqlite_database):
    account_id = account_with(sqlite_database, 5000)
    with sqlite_database.unit_of_work() as session:
        first = book.reserve_many(session, account_id, requests(1000, 1000), now=NOW)
    with sqlite_database.unit_of_work() as session:
        again = book.reserve_many(session, account_id, requests(1000, 1000, 1000), now=NOW)
    assert [h.id for h in again[:2]] == [h.id for h in first]
    with sqlite_database.unit_of_work() as session:
        assert book.balance(session, account_id, now=NOW).held == 3000
        assert verify(session) == []


def test_each_hold_of_a_batch_settles_on_its_own(sqlite_database):
    account_id = account_with(sqlite_database, 5000)
    with sqlite_database.unit_of_work() as session:
        holds = book.reserve_many(session, account_id, requests(1000, 1000), now=NOW)
        book.settle(session, holds[0].id, 1500, idempotency_key="usage:m0", now=NOW)
        book.void(session, holds[1].id, now=NOW)
    with sqlite_database.unit_of_work() as session:
        view = book.balance(session, account_id, now=NOW)
        assert (view.balance, view.held) == (3500, 0)
        assert verify(session) == []
