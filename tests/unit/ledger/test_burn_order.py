"""Burn order: priority, then soonest expiry (never-expiring last), then grant time, then id."""

from datetime import datetime, timedelta, timezone
from types import SimpleNamespace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared.db import Database
from shared.ledger import book
from shared.ledger.accounts import Overdraft, create_account
from shared.ledger.burn_order import burn_key
from shared.models import Base

UTC = timezone.utc
T0 = datetime(2021, 1, 1, tzinfo=UTC)


def lot(id, priority=10, expires_at=None, granted_at=T0):
    return SimpleNamespace(id=id, priority=priority, expires_at=expires_at, granted_at=granted_at)


def test_burn_key_orders_priority_then_expiry_with_never_last_then_grant_time_then_id():
    lots = [
        lot(1, priority=30),                                    # purchase: never expires, last priority
        lot(2, priority=20, expires_at=T0 + timedelta(days=60)),
        lot(3, priority=20),                                    # never expires: after every expiring peer
        lot(4, priority=20, expires_at=T0 + timedelta(days=30)),
        lot(5, priority=10, expires_at=T0 + timedelta(days=30), granted_at=T0 + timedelta(hours=1)),
        lot(6, priority=10, expires_at=T0 + timedelta(days=30)),
        lot(7, priority=10, expires_at=T0 + timedelta(days=30)),
    ]

    assert [x.id for x in sorted(lots, key=burn_key)] == [6, 7, 5, 4, 2, 3, 1]


def new_account(session, **overrides) -> str:
    options = dict(name="Acme", timezone="America/New_York", plan_monthly_credits=0, plan_cycle="monthly",
                   plan_rollover="fifo_12m", overdraft=Overdraft("prepaid"), low_balance_threshold=0, now=T0)
    account, _ = create_account(session, **{**options, **overrides})
    return account.id


def spend(session, account_id, amount, key, now=T0):
    hold = book.reserve(session, account_id, amount, idempotency_key=f"r-{key}", ttl_seconds=600, now=now)
    book.settle(session, hold.id, amount, idempotency_key=f"s-{key}", now=now)


def remaining_by_kind(session, account_id, now=T0):
    return {(lot.kind, lot.granted_at.date().isoformat()): lot.remaining
            for lot in book.balance(session, account_id, now=now).lots}


def test_plan_credits_burn_before_purchased_credits(database):
    # Given 100 plan credits and 50 purchased
    with database.unit_of_work() as session:
        account_id = new_account(session)
        book.grant(session, account_id, 100_000, "plan", granted_at=T0, idempotency_key="plan")
        book.grant(session, account_id, 50_000, "purchase", granted_at=T0, idempotency_key="purchase")
    # When 120 are spent
    with database.unit_of_work() as session:
        spend(session, account_id, 120_000, "a")
    # Then 30 purchased credits are left and nothing else
    with database.unit_of_work() as session:
        assert remaining_by_kind(session, account_id) == {("purchase", "2021-01-01"): 30_000}


def test_rollover_lots_burn_oldest_first_and_expire_twelve_months_later_local(database):
    # Given rollover lots of 300 granted 2020-09-01 and 2020-10-01 (local)
    september = datetime(2020, 9, 1, 4, tzinfo=UTC)   # midnight in New York
    october = datetime(2020, 10, 1, 4, tzinfo=UTC)
    with database.unit_of_work() as session:
        account_id = new_account(session)
        book.grant(session, account_id, 300_000, "rollover", granted_at=october, idempotency_key="oct")
        september_lot = book.grant(session, account_id, 300_000, "rollover", granted_at=september,
                                     idempotency_key="sep")
    # When 100 are spent
    with database.unit_of_work() as session:
        spend(session, account_id, 100_000, "a", now=october)
        left = {lot.granted_at: lot.remaining for lot in book.balance(session, account_id, now=october).lots}
    # Then the September lot paid, and it expires at the end of 2021-08-31 in New York
    assert left == {september: 200_000, october: 300_000}
    assert september_lot.expires_at == datetime(2021, 9, 1, 4, tzinfo=UTC)


_lots = st.lists(st.tuples(st.integers(0, 3), st.one_of(st.none(), st.integers(1, 5)), st.integers(0, 5),
                           st.integers(1, 50)), min_size=1, max_size=8)


@pytest.fixture(scope="module")
def burn_database(tmp_path_factory):
    database = Database(f"sqlite:///{tmp_path_factory.mktemp('burn') / 'burn.db'}")
    Base.metadata.create_all(database.engine)
    yield database
    database.dispose()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(lots=_lots, spend_ratio=st.floats(0, 1.2))
def test_the_single_update_burn_matches_sorting_by_burn_key(burn_database, lots, spend_ratio):
    # Given lots with random priorities, expiries and grant times
    with burn_database.unit_of_work() as session:
        account_id = new_account(session, overdraft=Overdraft("postpaid"))
        granted = []
        for index, (priority, expiry_days, granted_days, credits) in enumerate(lots):
            granted.append(book.grant(
                session, account_id, credits * 1000, "bonus", granted_at=T0 + timedelta(days=granted_days),
                expires_at=None if expiry_days is None else T0 + timedelta(days=10 + expiry_days),
                priority=priority, idempotency_key=f"{account_id}-{index}"))
    total = sum(g.amount for g in granted)
    amount = max(1, int(total * spend_ratio))
    # When some amount is spent
    with burn_database.unit_of_work() as session:
        spend(session, account_id, amount, account_id)
        after = {lot.id: lot.remaining for lot in book.balance(session, account_id, now=T0).lots}
    # Then the lots are emptied exactly in burn_key order
    expected, left = {}, amount
    for g in sorted(granted, key=burn_key):
        taken = min(left, g.amount)
        left -= taken
        if g.amount - taken:
            expected[g.id] = g.amount - taken
    assert after == expected
