"""Expiry is a property of the lot: credits past their `expires_at` are never spendable, month-end or not.

On SQLite (the Python path) and PostgreSQL (the functions), each from a fresh account.
"""

from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select

from shared.errors import InsufficientCredits
from shared.ledger import accounts, allocations, book
from shared.ledger.verify import verify
from shared.models import Account, Entry

UTC = timezone.utc
CHICAGO = "America/Chicago"
CREDIT = 1_000


def local(*args, tz=CHICAGO) -> datetime:
    return datetime(*args, tzinfo=ZoneInfo(tz)).astimezone(UTC)


GRANTED = local(2020, 9, 1)
LAST_MINUTE = local(2021, 8, 31, 23, 59)
MIDNIGHT = local(2021, 9, 1)  # when the 12-month rollover lot granted 2020-09-01 expires


def rollover_account(database, *, credits=300, purchased=0, policy="prepaid") -> str:
    """An account in Chicago whose credits are a rollover lot granted 2020-09-01 (and, if asked, purchased ones)."""
    with database.unit_of_work() as session:
        account, _ = accounts.create_account(
            session, name="Realty", timezone=CHICAGO, plan_monthly_credits=0, plan_cycle="monthly",
            plan_rollover="fifo_12m", overdraft=accounts.Overdraft(policy), low_balance_threshold=0, now=GRANTED)
        book.grant(session, account.id, credits * CREDIT, "rollover", granted_at=GRANTED,
                   idempotency_key=f"rollover-{account.id}")
        if purchased:
            book.grant(session, account.id, purchased * CREDIT, "purchase", granted_at=GRANTED,
                       idempotency_key=f"purchase-{account.id}")
        return account.id


def reserve(database, account_id, credits, now, key, **kwargs) -> book.HoldView:
    with database.unit_of_work() as session:
        return book.reserve(session, account_id, credits * CREDIT, idempotency_key=key, ttl_seconds=3600, now=now,
                            **kwargs)


def balance(database, account_id, now) -> book.BalanceView:
    with database.unit_of_work() as session:
        return book.balance(session, account_id, now=now)


def expiries(database, account_id) -> list[tuple[datetime, int]]:
    with database.unit_of_work() as session:
        return [(book.utc(row.at), row.amount) for row in session.execute(
            select(Entry.at, Entry.amount).where(Entry.account_id == account_id, Entry.kind == "expiry")
            .order_by(Entry.id))]


def assert_clean(database, account_id):
    with database.unit_of_work() as session:
        assert verify(session, account_id) == []


def test_credits_are_spendable_at_23_59_local_and_not_one_second_after_without_any_month_end(database):
    # given 300 rollover credits granted 2020-09-01 in Chicago, and no month-end ever run
    account_id = rollover_account(database)

    # then at 23:59 local on 2021-08-31 all 300 can be held
    hold = reserve(database, account_id, 300, LAST_MINUTE, "last-minute")
    with database.unit_of_work() as session:
        book.void(session, hold.id, now=LAST_MINUTE + timedelta(seconds=30))
    assert balance(database, account_id, MIDNIGHT - timedelta(seconds=1)).available == 300 * CREDIT

    # and at midnight not one credit is
    with pytest.raises(InsufficientCredits):
        reserve(database, account_id, 1, MIDNIGHT, "midnight")
    assert balance(database, account_id, MIDNIGHT).balance == 0

    # when the next operation commits (a purchase at 00:05), it writes the expiry, dated at the lot's expiry
    with database.unit_of_work() as session:
        book.grant(session, account_id, 1 * CREDIT, "purchase", granted_at=MIDNIGHT + timedelta(minutes=5),
                   idempotency_key="top-up")
    assert expiries(database, account_id) == [(MIDNIGHT, -300 * CREDIT)]
    assert balance(database, account_id, MIDNIGHT + timedelta(minutes=5)).balance == 1 * CREDIT
    assert_clean(database, account_id)


def test_reads_never_count_an_expired_lot_before_anything_writes_its_expiry(database):
    # given 300 rollover credits past their expiry and 50 purchased ones, nothing written since
    account_id = rollover_account(database, purchased=50)
    after = MIDNIGHT + timedelta(days=3)

    # then the balance, the lots, the sender's pre-check and the expiring report leave them out
    view = balance(database, account_id, after)
    assert (view.balance, view.available, view.pool_available) == (50 * CREDIT, 50 * CREDIT, 50 * CREDIT)
    assert [lot.kind for lot in view.lots] == ["purchase"]
    assert view.expiring_end_of_month == 0
    with database.unit_of_work() as session:
        assert book.available_for(session, account_id, now=after) == 50 * CREDIT
        assert book.lapsed(session, account_id, now=after) == {None: 300 * CREDIT}
    # and reading wrote nothing
    assert expiries(database, account_id) == []


def test_a_hold_taken_at_23_59_and_settled_at_00_01_burns_the_lot_it_was_held_from(database):
    # given a prepaid account whose only credits are 300 rollover credits expiring at midnight
    account_id = rollover_account(database)
    hold = reserve(database, account_id, 2, LAST_MINUTE, "held-before")

    # when another send finds the lot expired at 00:00:30, and the first settles at 00:01
    with pytest.raises(InsufficientCredits):
        reserve(database, account_id, 1, MIDNIGHT + timedelta(seconds=30), "after")
    with database.unit_of_work() as session:
        settled = book.settle(session, hold.id, 2 * CREDIT, idempotency_key="settle",
                              now=MIDNIGHT + timedelta(minutes=1))

    # then the send was paid from the lot, the rest of it expired at midnight, and the account is not locked
    assert settled.status == "active"
    assert expiries(database, account_id) == [(MIDNIGHT, -298 * CREDIT)]
    view = balance(database, account_id, MIDNIGHT + timedelta(minutes=1))
    assert (view.balance, view.held, view.status) == (0, 0, "active")
    assert_clean(database, account_id)


def test_what_a_hold_from_before_the_expiry_does_not_use_lapses_when_it_settles_or_is_voided(database):
    account_id = rollover_account(database, credits=10, purchased=5)
    cheaper = reserve(database, account_id, 3, LAST_MINUTE, "cheaper")
    failed = reserve(database, account_id, 4, LAST_MINUTE, "failed")
    later = MIDNIGHT + timedelta(minutes=2)

    # when the first costs 1 credit of its 3 and the second fails
    with database.unit_of_work() as session:
        book.settle(session, cheaper.id, 1 * CREDIT, idempotency_key="cheaper-settled", now=later)
    with database.unit_of_work() as session:
        book.void(session, failed.id, now=later)

    # then of the 10 expiring credits exactly 1 was spent; the other 9 expired, and the purchased 5 are whole
    assert sum(amount for _, amount in expiries(database, account_id)) == -9 * CREDIT
    assert all(at == MIDNIGHT for at, _ in expiries(database, account_id))
    view = balance(database, account_id, later)
    assert (view.balance, view.available) == (5 * CREDIT, 5 * CREDIT)
    assert [(lot.kind, lot.remaining) for lot in view.lots] == [("purchase", 5 * CREDIT)]
    assert_clean(database, account_id)


def test_a_hold_taken_after_the_expiry_never_keeps_the_expired_lot(database):
    # given a hold from before midnight and one from after, on 10 expiring and 20 purchased credits
    account_id = rollover_account(database, credits=10, purchased=20)
    before = reserve(database, account_id, 6, LAST_MINUTE, "before")
    after = reserve(database, account_id, 8, MIDNIGHT + timedelta(minutes=1), "after")

    # when the hold from before midnight is voided
    with database.unit_of_work() as session:
        book.void(session, before.id, now=MIDNIGHT + timedelta(minutes=2))

    # then none of the expired lot is left for the later hold: it is paid from the purchased credits
    view = balance(database, account_id, MIDNIGHT + timedelta(minutes=2))
    assert (view.balance, view.held, view.available) == (20 * CREDIT, 8 * CREDIT, 12 * CREDIT)
    with database.unit_of_work() as session:
        book.settle(session, after.id, 8 * CREDIT, idempotency_key="after-settled", now=MIDNIGHT + timedelta(minutes=3))
    assert balance(database, account_id, MIDNIGHT + timedelta(minutes=3)).balance == 12 * CREDIT
    assert_clean(database, account_id)


def test_a_users_own_credits_expire_the_same_way(database):
    # given a user holding 5 of the account's rollover credits
    account_id = rollover_account(database, credits=10)
    with database.unit_of_work() as session:
        user = allocations.create_user(session, account_id, name="Agent", email="a@example.com", phone=None,
                                       role="user", monthly_credits=0, now=GRANTED)
        allocations.update_user(session, account_id, user.id, now=GRANTED, total_credits=5 * CREDIT)

    # when anything touches the account after the expiry (here, a purchase)
    with database.unit_of_work() as session:
        book.grant(session, account_id, 1 * CREDIT, "purchase", granted_at=MIDNIGHT + timedelta(hours=1),
                   idempotency_key="top-up")

    # then both wallets' expiries are written, dated midnight, and the user has nothing left
    assert sorted(expiries(database, account_id)) == [(MIDNIGHT, -5 * CREDIT), (MIDNIGHT, -5 * CREDIT)]
    view = balance(database, account_id, MIDNIGHT + timedelta(hours=1))
    assert [(seat.balance, seat.held) for seat in view.users] == [(0, 0)]
    assert view.balance == 1 * CREDIT
    assert_clean(database, account_id)


def test_the_account_row_keeps_the_next_expiry_so_a_reservation_stays_one_conditional_update(database):
    account_id = rollover_account(database, purchased=5)
    with database.unit_of_work() as session:
        assert book.utc(session.get(Account, account_id).next_expiry_at) == MIDNIGHT
    reserve(database, account_id, 1, MIDNIGHT + timedelta(days=1), "after")
    with database.unit_of_work() as session:
        assert session.get(Account, account_id).next_expiry_at is None  # only never-expiring credits are left


def test_credits_given_to_a_user_after_an_expiry_never_come_from_what_a_pending_hold_kept_of_the_expired_lot(
        database):
    # given 300 rollover credits expiring at midnight and 20 purchased ones, and a 10-credit pool hold from 23:59
    account_id = rollover_account(database, purchased=20)
    hold = reserve(database, account_id, 10, LAST_MINUTE, "held-before")
    with database.unit_of_work() as session:
        user = allocations.create_user(session, account_id, name="Agent", email="a@example.com", phone=None,
                                       role="user", monthly_credits=0, now=GRANTED)

    # when, after midnight, the user is given 10 credits, and the hold then settles in full
    after = MIDNIGHT + timedelta(minutes=5)
    with database.unit_of_work() as session:
        book.transfer(session, account_id, user.id, 10 * CREDIT, now=after, idempotency_key="to-agent")
    with database.unit_of_work() as session:
        book.settle(session, hold.id, 10 * CREDIT, idempotency_key="settle", now=after)

    # then the user keeps 10 spendable purchased credits (not expired ones), the hold was paid from the lot it was
    # held from, and only the rollover credits nobody held expired
    view = balance(database, account_id, after + timedelta(minutes=1))
    assert [(seat.balance, seat.held) for seat in view.users] == [(10 * CREDIT, 0)]
    assert view.balance == 20 * CREDIT
    assert expiries(database, account_id) == [(MIDNIGHT, -290 * CREDIT)]
    assert_clean(database, account_id)


def test_a_users_hold_from_before_the_expiry_settles_after_it_with_the_expiry_written_first(database):
    # given a user given 5 of the account's rollover credits, and a 2-credit hold on them from 23:59
    account_id = rollover_account(database, credits=10)
    with database.unit_of_work() as session:
        user = allocations.create_user(session, account_id, name="Agent", email="a@example.com", phone=None,
                                       role="user", monthly_credits=0, now=GRANTED)
        allocations.update_user(session, account_id, user.id, now=GRANTED, total_credits=5 * CREDIT)
    hold = reserve(database, account_id, 2, LAST_MINUTE, "user-hold", user_id=user.id)

    # when, after midnight, the hold settles for 1 credit before anything wrote the expiry
    with database.unit_of_work() as session:
        settlement = book.settle(session, hold.id, 1 * CREDIT, idempotency_key="settle",
                                 now=MIDNIGHT + timedelta(minutes=5))

    # then the expiries were written first (what nobody held at midnight, then what the hold kept and did not use),
    # the user paid the 1 credit and has nothing left, and the ledger is clean
    assert settlement.charged == 1 * CREDIT
    assert sum(amount for _, amount in expiries(database, account_id)) == -9 * CREDIT
    view = balance(database, account_id, MIDNIGHT + timedelta(minutes=6))
    assert [(seat.balance, seat.held) for seat in view.users] == [(0, 0)]
    assert view.balance == 0
    assert_clean(database, account_id)
