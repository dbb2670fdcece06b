"""reserve and settle alone in their unit of work (`Database.one_statement()`), on SQLite and PostgreSQL.

On PostgreSQL such a call runs in autocommit: the function call is its own transaction, and only a call
that must write an expiry first opens one. The ledger must come out exactly as from `unit_of_work()`.
"""

from datetime import timedelta

import pytest
from sqlalchemy import select

from shared.db import Database
from shared.errors import Conflict, InsufficientCredits
from shared.ledger import book
from shared.ledger.verify import verify
from shared.models import Entry
from tests.unit.ledger.test_expiry_at_spend_time import CREDIT, LAST_MINUTE, MIDNIGHT, rollover_account


def reserve_in(unit, account_id, credits, now, key) -> book.HoldView:
    """book.reserve in `unit` (`Database.one_statement` or `Database.unit_of_work`)."""
    with unit() as handle:
        return book.reserve(handle, account_id, credits * CREDIT, reference=f"msg-{key}", idempotency_key=key,
                            ttl_seconds=3600, now=now)


def settle_in(unit, hold, credits, now, key, **kwargs) -> book.Settlement:
    with unit() as handle:
        return book.settle(handle, hold, credits * CREDIT, idempotency_key=key, now=now, **kwargs)


def lone_reserve(database, *args) -> book.HoldView:
    return reserve_in(database.one_statement, *args)


def lone_settle(database, *args, **kwargs) -> book.Settlement:
    return settle_in(database.one_statement, *args, **kwargs)


def unit_reserve(database, *args) -> book.HoldView:
    return reserve_in(database.unit_of_work, *args)


def unit_settle(database, *args, **kwargs) -> book.Settlement:
    return settle_in(database.unit_of_work, *args, **kwargs)


def ledger(database, account_id, now) -> tuple:
    """What the account shows and every entry it has, without ids; asserts `ledger verify` is clean."""
    with database.unit_of_work() as session:
        assert verify(session, account_id) == []
        view = book.balance(session, account_id, now=now)
        lines = [(row.kind, row.amount, row.balance_after, book.utc(row.at)) for row in session.execute(
            select(Entry).where(Entry.account_id == account_id).order_by(Entry.id)).scalars()]
    return view.balance, view.held, view.available, [(lot.kind, lot.remaining) for lot in view.lots], lines


def test_a_lone_reserve_and_settle_charge_and_replay_as_in_a_unit_of_work(database):
    # Given two accounts alike, 300 credits each
    lone, unit = rollover_account(database), rollover_account(database)

    # When one reserves 10 and settles 12 plus a carrier fee alone, the other in units of work
    lone_hold = lone_reserve(database, lone, 10, LAST_MINUTE, f"{lone}-hold")
    unit_hold = unit_reserve(database, unit, 10, LAST_MINUTE, f"{unit}-hold")
    lone_settled = lone_settle(database, lone_hold.id, 12, LAST_MINUTE, f"{lone}-usage", carrier_fee_mc=7)
    unit_settled = unit_settle(database, unit_hold.id, 12, LAST_MINUTE, f"{unit}-usage", carrier_fee_mc=7)

    # Then both answer and keep the same ledger: 300 - 12 credits - 7 mc, nothing held
    assert (lone_settled.charged, lone_settled.balance, lone_settled.hold.status) == (12 * CREDIT + 7,
                                                                                       288 * CREDIT - 7, "settled")
    assert (unit_settled.charged, unit_settled.balance) == (lone_settled.charged, lone_settled.balance)
    assert ledger(database, lone, LAST_MINUTE) == ledger(database, unit, LAST_MINUTE)

    # And replays answer the first hold and settlement, and settling under another key is a Conflict
    assert lone_reserve(database, lone, 10, LAST_MINUTE, f"{lone}-hold").id == lone_hold.id
    assert lone_settle(database, lone_hold.id, 12, LAST_MINUTE, f"{lone}-usage",
                       carrier_fee_mc=7).balance == lone_settled.balance
    with pytest.raises(Conflict):
        lone_settle(database, lone_hold.id, 12, LAST_MINUTE, f"{lone}-other")
    assert ledger(database, lone, LAST_MINUTE) == ledger(database, unit, LAST_MINUTE)


def test_a_lone_reserve_past_an_expiry_writes_the_expiry_with_the_hold(database):
    # Given 300 rollover credits that expire at midnight and 100 purchased ones
    lone, unit = rollover_account(database, purchased=100), rollover_account(database, purchased=100)

    # When the first operation after midnight is a lone reservation of 50 (and the same in a unit of work)
    lone_reserve(database, lone, 50, MIDNIGHT, f"{lone}-hold")
    unit_reserve(database, unit, 50, MIDNIGHT, f"{unit}-hold")

    # Then the 300 expired credits are written off, dated midnight, and 50 of the 100 left are held
    balance, held, available, _lots, lines = ledger(database, lone, MIDNIGHT)
    assert (balance, held, available) == (100 * CREDIT, 50 * CREDIT, 50 * CREDIT)
    assert ("expiry", -300 * CREDIT, 100 * CREDIT, MIDNIGHT) in lines
    assert ledger(database, lone, MIDNIGHT) == ledger(database, unit, MIDNIGHT)


def test_a_lone_reserve_refused_after_an_expiry_writes_nothing(database):
    # Given only 300 rollover credits, expiring at midnight
    account_id = rollover_account(database)
    before = ledger(database, account_id, LAST_MINUTE)

    # When a lone reservation comes after midnight
    with pytest.raises(InsufficientCredits):
        lone_reserve(database, account_id, 1, MIDNIGHT, "after-midnight")

    # Then it is refused and, as a unit of work would, leaves the expiry to the next operation
    assert ledger(database, account_id, LAST_MINUTE) == before


def test_a_lone_settle_past_an_expiry_lapses_what_its_hold_did_not_use(database):
    # Given 300 rollover credits expiring at midnight, 120 of them held a minute before
    lone, unit = rollover_account(database), rollover_account(database)
    lone_hold = lone_reserve(database, lone, 120, LAST_MINUTE, f"{lone}-hold")
    unit_hold = unit_reserve(database, unit, 120, LAST_MINUTE, f"{unit}-hold")

    # When the send settles for 100 an hour after midnight, alone (and the same in a unit of work)
    later = MIDNIGHT + timedelta(hours=1)
    settled = lone_settle(database, lone_hold.id, 100, later, f"{lone}-usage")
    unit_settle(database, unit_hold.id, 100, later, f"{unit}-usage")

    # Then the 100 are charged, nothing else is spendable, and the ledger is the unit of work's
    balance, held, available, _lots, lines = ledger(database, lone, later)
    assert (settled.charged, held, available, balance) == (100 * CREDIT, 0, 0, 0)
    assert [kind for kind, *_ in lines].count("expiry") >= 1
    assert ledger(database, lone, later) == ledger(database, unit, later)


def test_a_unit_of_work_after_a_lone_call_on_the_same_connection_still_rolls_back(database):
    # Given one pooled connection, just used for a lone reservation
    account_id = rollover_account(database)
    single = Database(database.url, pool_size=1)
    try:
        lone_reserve(single, account_id, 10, LAST_MINUTE, "lone")

        # When a unit of work on that connection reserves, then fails
        with pytest.raises(RuntimeError), single.unit_of_work() as session:
            book.reserve(session, account_id, 20 * CREDIT, idempotency_key="undone", ttl_seconds=60, now=LAST_MINUTE)
            raise RuntimeError("the caller fails after the reservation")
    finally:
        single.dispose()

    # Then only the lone reservation is held
    assert ledger(database, account_id, LAST_MINUTE)[1] == 10 * CREDIT
