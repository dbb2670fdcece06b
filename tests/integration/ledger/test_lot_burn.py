"""A settlement burns its charge from the lots in burn order, on SQLite (book._burn) and on PostgreSQL (ledger_settle,
which takes the charge from the first lot alone when it holds enough, and runs the window over them all when not)."""

from datetime import timedelta

from sqlalchemy import select

from shared.ledger import book
from shared.ledger.accounts import Overdraft, create_account
from shared.models import Lot
from tests.integration.ledger.test_reserve_many import NOW


def account_with_two_lots(database) -> str:
    """Purchased credits granted first (5, lowest id) and plan credits after them (3, priority 10: they burn first)."""
    with database.unit_of_work() as session:
        account, _ = create_account(session, name="Acme", timezone="UTC", plan_monthly_credits=0, plan_cycle="monthly",
                                    plan_rollover="none", overdraft=Overdraft("prepaid"), low_balance_threshold=0,
                                    now=NOW - timedelta(days=3))
        book.grant(session, account.id, 5000, "purchase", granted_at=NOW - timedelta(days=3), expires_at=None,
                   idempotency_key="purchase")
        book.grant(session, account.id, 3000, "plan", granted_at=NOW - timedelta(days=2),
                   expires_at=NOW + timedelta(days=20), idempotency_key="plan")
        return account.id


def send_and_settle(database, account_id: str, key: str, charge_mc: int) -> None:
    with database.unit_of_work() as session:
        hold = book.reserve(session, account_id, charge_mc, idempotency_key=key, ttl_seconds=900, now=NOW)
    with database.unit_of_work() as session:
        book.settle(session, hold.id, charge_mc, idempotency_key=f"{key}:usage", now=NOW)


def remaining(database, account_id: str) -> dict[str, int]:
    with database.unit_of_work() as session:
        return dict(session.execute(select(Lot.kind, Lot.remaining).where(Lot.account_id == account_id)).all())


def test_charges_burn_the_first_lot_in_burn_order_then_cross_into_the_next(database):
    # given an account whose plan lot (the newer, with the higher id) burns before its purchased one
    account_id = account_with_two_lots(database)

    # when a charge the plan lot covers is settled, then one that empties it exactly
    send_and_settle(database, account_id, "m1", 2000)
    after_first = remaining(database, account_id)
    send_and_settle(database, account_id, "m2", 1000)
    after_second = remaining(database, account_id)
    # and then one settled with the plan lot empty
    send_and_settle(database, account_id, "m3", 1500)
    after_third = remaining(database, account_id)

    # then each burnt the lots in burn order: the plan lot first, never the older purchase before it, then the purchase
    assert after_first == {"plan": 1000, "purchase": 5000}
    assert after_second == {"plan": 0, "purchase": 5000}
    assert after_third == {"plan": 0, "purchase": 3500}


def test_a_charge_larger_than_the_first_lot_takes_the_rest_from_the_next(database):
    # given the same two lots
    account_id = account_with_two_lots(database)

    # when a charge of more than the plan lot holds is settled
    send_and_settle(database, account_id, "m1", 4000)

    # then the plan lot is emptied and the purchase pays the rest
    assert remaining(database, account_id) == {"plan": 0, "purchase": 4000}
