"""Two month-end collectors at once on PostgreSQL, the card on file changed between them: the bill is charged once."""

import threading
from datetime import timedelta

import pytest
from sqlalchemy import select

from shared.billing import month_end, purchases
from shared.billing.calendar import Period
from shared.billing.payments import SimulatedGateway
from shared.ledger import book
from shared.models import AutoRecharge, BillingRun
from tests.unit.billing.test_month_end import CREDIT, TEST_PRICES, local, make_account

pytestmark = pytest.mark.postgres


def set_card(database, account_id: str, card: str) -> None:
    with database.unit_of_work() as session:
        session.get(AutoRecharge, account_id).payment_method = card


def test_two_collectors_meeting_a_card_change_charge_a_bill_once(postgres_database, monkeypatch):
    # given a bill still pending after its first payment met a gateway error (nothing charged), a good card now on file
    database, gateway, now = postgres_database, SimulatedGateway(), local("UTC", 2020, 9, 1)
    account_id = make_account(database, policy="postpaid", card="pm_card_chargeDeclinedProcessingError")
    with database.unit_of_work() as session:
        book.charge_pool(session, account_id, 40 * CREDIT, kind="usage", idempotency_key="use",
                         now=local("UTC", 2020, 8, 20))
    month_end.run(database, gateway, Period(2020, 8), now=now, price_list=TEST_PRICES)
    set_card(database, account_id, "pm_card_visa")

    # and a first collector that has opened its payment, on that card, and not committed yet
    opened, go_on = threading.Event(), threading.Event()
    open_payments = purchases.open_payments

    def opening_slowly(session, terms, **options):
        payments = open_payments(session, terms, **options)
        if threading.current_thread().name == "first":
            opened.set()
            go_on.wait(30)
        return payments

    monkeypatch.setattr(purchases, "open_payments", opening_slowly)
    first = threading.Thread(name="first", target=month_end.collect_bills,
                             args=(database, gateway, account_id), kwargs={"now": now + timedelta(minutes=1)})
    first.start()
    assert opened.wait(30)

    # when the owner saves another card, and a second collector takes the same bill meanwhile
    set_card(database, account_id, "pm_card_mastercard")
    second = threading.Thread(name="second", target=month_end.collect_bills,
                              args=(database, gateway, account_id), kwargs={"now": now + timedelta(minutes=1)})
    second.start()
    second.join(1.0)  # it either waits for the first collector's bill, or charges on its own
    go_on.set()
    first.join(30)
    second.join(30)

    # then the bill was charged once, and is paid
    assert [charge.payment_method for charge in gateway.charges(account_id, status="succeeded")] == ["pm_card_visa"]
    with database.unit_of_work() as session:
        assert session.scalar(select(BillingRun.status).where(BillingRun.account_id == account_id,
                                                              BillingRun.step == "bill")) == "paid"
    assert not (first.is_alive() or second.is_alive())
