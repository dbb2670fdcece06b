"""What is owed is charged through one payment at a time (purchases.in_play): a card saved while a payment's answer
is lost must not get a payment of its own, or the customer pays twice."""

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from shared.billing import auto_recharge, dunning, month_end
from shared.billing.calendar import Period
from shared.billing.payment_events import reconcile_open
from shared.billing.payments import GatewayUnavailable
from shared.ledger import book
from shared.models import AutoRecharge, BillingRun, DunningRun
from tests.unit.billing.test_month_end import CREDIT, TEST_PRICES, local, make_account
from tests.unit.billing.test_purchases import CrashAfterCharge, new_account

NOW = datetime(2026, 11, 3, 12, 0, tzinfo=UTC)


def first_answer_lost() -> CrashAfterCharge:
    """Stripe decides the first confirmation (the card is charged, or declined), but its answer never arrives."""
    return CrashAfterCharge(GatewayUnavailable("Stripe did not answer: APIConnectionError"))


def test_a_bill_whose_answer_was_lost_is_not_charged_again_on_a_card_saved_meanwhile(sqlite_database):
    # given a postpaid account that used 40 credits in August, its card on file
    account_id = make_account(sqlite_database, policy="postpaid", card="pm_card_visa")
    with sqlite_database.unit_of_work() as session:
        book.charge_pool(session, account_id, 40 * CREDIT, kind="usage", idempotency_key="use",
                         now=local("UTC", 2020, 8, 20))
    gateway, now = first_answer_lost(), local("UTC", 2020, 9, 1)

    # when month-end charges the bill and the answer is lost, the owner saves another card, the next billing tick
    # collects the bill still pending, and the payments sweeper asks about the first payment
    assert month_end.run(sqlite_database, gateway, Period(2020, 8), now=now, price_list=TEST_PRICES).payments_pending
    with sqlite_database.unit_of_work() as session:
        session.get(AutoRecharge, account_id).payment_method = "pm_card_mastercard"
    month_end.collect_bills(sqlite_database, gateway, account_id, now=now + timedelta(minutes=1))
    reconcile_open(sqlite_database, gateway, now=now + timedelta(minutes=5), older_than=timedelta(minutes=2))

    # then the bill was charged once, on the card its payment was made with, and is paid
    charged = gateway.charges(account_id, status="succeeded")
    assert [charge.payment_method for charge in charged] == ["pm_card_visa"]
    with sqlite_database.unit_of_work() as session:
        assert session.scalar(select(BillingRun.status).where(BillingRun.step == "bill")) == "paid"


def unpaid_run(database, card: str) -> tuple[str, str]:
    """An account owing 1234 cents from month-end, `card` on file: (account, dunning run)."""
    account_id = new_account(database)
    with database.unit_of_work() as session:
        auto_recharge.configure(session, account_id, enabled=False, threshold_mc=0, credits_mc=100_000,
                                payment_method=card, now=NOW)
        run_id = dunning.start_dunning(session, account_id, reason="month_end", amount_cents=1234,
                                       reference="invoice-2026-10", now=NOW).id
    return account_id, run_id


def step_zero(database, gateway, run_id: str, at: datetime):
    return dunning.run_step(database, gateway=gateway, email_sender=None, texter=None, public_base_url="https://x",
                            run_id=run_id, step=0, now=at)


def save_card_and_retry(database, gateway, account_id: str, card: str, at: datetime):
    """What saving a card does (the setup page, PUT auto-recharge): the unpaid run is tried again at once."""
    with database.unit_of_work() as session:
        run_id = auto_recharge.card_saved(session, account_id, card, now=at)
    return dunning.retry_payment(database, gateway, run_id, now=at)


def test_a_dunning_step_whose_answer_was_lost_and_a_card_saved_meanwhile_collect_once(sqlite_database):
    # given a run whose first step charged the card, but the answer was lost (the step's job will run again)
    account_id, run_id = unpaid_run(sqlite_database, "pm_card_visa")
    gateway = first_answer_lost()
    with pytest.raises(GatewayUnavailable):
        step_zero(sqlite_database, gateway, run_id, NOW)

    # when the owner saves another card, and the step's job runs again
    save_card_and_retry(sqlite_database, gateway, account_id, "pm_card_mastercard", NOW + timedelta(minutes=1))
    step_zero(sqlite_database, gateway, run_id, NOW + timedelta(minutes=2))

    # then the 1234 cents were collected once, and the run is recovered
    assert [charge.amount_cents for charge in gateway.charges(account_id, status="succeeded")] == [1234]
    with sqlite_database.unit_of_work() as session:
        assert session.get(DunningRun, run_id).status == "recovered"


def test_a_card_saved_while_a_lost_answer_was_a_decline_is_charged_at_once(sqlite_database):
    # given a run whose first step's card was declined, but the answer was lost
    account_id, run_id = unpaid_run(sqlite_database, "pm_card_chargeDeclined")
    gateway = first_answer_lost()
    with pytest.raises(GatewayUnavailable):
        step_zero(sqlite_database, gateway, run_id, NOW)

    # when the owner saves a good card
    payment = save_card_and_retry(sqlite_database, gateway, account_id, "pm_card_visa", NOW + timedelta(minutes=1))

    # then the lost answer is learnt (a decline) and the new card is charged in the same retry
    assert (payment.payment_method, payment.status) == ("pm_card_visa", "succeeded")
    assert [charge.payment_method for charge in gateway.charges(account_id)] == ["pm_card_chargeDeclined",
                                                                                 "pm_card_visa"]
    with sqlite_database.unit_of_work() as session:
        assert session.get(DunningRun, run_id).status == "recovered"
