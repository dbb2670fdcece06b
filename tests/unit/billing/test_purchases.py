"""Purchases: credits land only when the payment succeeds; replays and crashes never charge twice."""

from datetime import UTC, datetime, timedelta

import pytest

from shared.billing.payment_events import reconcile_open
from shared.billing.payments import GatewayUnavailable, SimulatedGateway
from shared.billing.purchases import (
    PaymentDeclined,
    PaymentUnavailable,
    charge_payments,
    customer_of,
    open_payment,
    purchase,
)
from shared.errors import ValidationFailed
from shared.ledger import book
from shared.ledger.accounts import Overdraft, create_account
from shared.models import Payment

NOW = datetime(2026, 11, 3, 12, 0, tzinfo=UTC)


def new_account(database, **plan) -> str:
    with database.unit_of_work() as session:
        account, _ = create_account(session, name="Acme Realty", timezone="UTC",
                                    plan_monthly_credits=plan.get("monthly", 0), plan_cycle="monthly",
                                    plan_rollover="none", overdraft=Overdraft("prepaid"), low_balance_threshold=0,
                                    now=NOW)
        return account.id


def balance_of(database, account_id) -> int:
    with database.unit_of_work() as session:
        return book.balance(session, account_id, now=NOW).balance


class CrashAfterCharge(SimulatedGateway):
    """Decides the first confirmation (charges the card, or declines it), then raises `error` before the caller learns
    the outcome: by default the worker killed between charge and grant; a GatewayUnavailable is an answer lost."""

    def __init__(self, error: Exception | None = None):
        super().__init__()
        self.crash = True
        self.error = error or ConnectionError("worker killed after the gateway charged")

    def confirm_intent(self, intent_id, **kwargs):
        result = super().confirm_intent(intent_id, **kwargs)
        if self.crash:
            self.crash = False
            raise self.error
        return result


def test_a_successful_payment_grants_purchase_credits_at_the_plan_price(database):
    # given an account on the starter plan
    account_id = new_account(database)
    gateway = SimulatedGateway()

    # when it buys the 500-credit bucket with a good card
    payment = purchase(database, gateway, account_id, 500_000, "pm_card_visa", idempotency_key="k1", now=NOW)

    # then it is charged the starter price once and the credits never expire
    assert payment.status == "succeeded" and payment.amount_cents == 2250
    assert [c.amount_cents for c in gateway.charges(account_id)] == [2250]
    assert balance_of(database, account_id) == 500_000
    with database.unit_of_work() as session:
        [lot] = book.balance(session, account_id, now=NOW).lots
    assert lot.kind == "purchase" and lot.expires_at is None


def test_a_bigger_plan_pays_less_for_the_same_bucket(database):
    account_id = new_account(database, monthly=10_000_000)
    payment = purchase(database, SimulatedGateway(), account_id, 500_000, "pm_card_visa", idempotency_key="k",
                       now=NOW)
    assert payment.amount_cents == 1750


@pytest.mark.parametrize("token, code", [("pm_card_chargeDeclined", "generic_decline"),
                                         ("pm_card_chargeDeclinedInsufficientFunds", "insufficient_funds")])
def test_a_declined_payment_grants_nothing(database, token, code):
    account_id = new_account(database)
    with pytest.raises(PaymentDeclined) as declined:
        purchase(database, SimulatedGateway(), account_id, 100_000, token, idempotency_key="k", now=NOW)
    assert declined.value.payment.decline_code == code
    assert balance_of(database, account_id) == 0


def test_only_listed_buckets_can_be_bought(database):
    account_id = new_account(database)
    with pytest.raises(ValidationFailed) as refused:
        purchase(database, SimulatedGateway(), account_id, 123_000, "pm_card_visa", idempotency_key="k", now=NOW)
    assert "100, 500, 1000, 5000" in refused.value.errors["credits"]


def test_replaying_a_purchase_returns_it_without_charging_again(database):
    account_id = new_account(database)
    gateway = SimulatedGateway()
    first = purchase(database, gateway, account_id, 100_000, "pm_card_visa", idempotency_key="same", now=NOW)

    again = purchase(database, gateway, account_id, 100_000, "pm_card_visa", idempotency_key="same", now=NOW)

    assert again.id == first.id
    assert len(gateway.charges(account_id)) == 1
    assert balance_of(database, account_id) == 100_000


def test_a_crash_after_the_charge_is_completed_by_the_sweep_with_one_charge(database):
    # given a purchase whose process died after the gateway charged, before the grant
    account_id = new_account(database)
    gateway = CrashAfterCharge()
    with pytest.raises(ConnectionError):
        purchase(database, gateway, account_id, 100_000, "pm_card_visa", idempotency_key="k", now=NOW)
    assert balance_of(database, account_id) == 0
    with database.unit_of_work() as session:
        assert session.query(Payment).one().status == "processing"

    # when the sweep finds it later
    completed = reconcile_open(database, gateway, now=NOW + timedelta(minutes=10))

    # then the credits land and the card was charged once
    assert completed == 1
    assert balance_of(database, account_id) == 100_000
    assert len(gateway.charges(account_id)) == 1


class GatewayNotAnswering(SimulatedGateway):
    """A gateway that answers nothing (down, or stalling past the client's timeout), counting how often it was asked."""

    def __init__(self):
        super().__init__()
        self.asked = 0

    def find_intent(self, *, payment_id, intent_id):
        self.asked += 1
        raise GatewayUnavailable("no answer")


def waiting_for_3d_secure(database, gateway, count: int) -> list[str]:
    """`count` accounts, each with a purchase whose card asks for 3-D Secure, never completed."""
    account_ids = [new_account(database) for _ in range(count)]
    for account_id in account_ids:
        purchase(database, gateway, account_id, 100_000, "pm_card_authenticationRequired",
                 idempotency_key=f"k-{account_id}", now=NOW)
    return account_ids


def test_a_sweep_asks_the_gateway_nothing_more_once_it_did_not_answer(database):
    # given two payments left open, and a gateway that answers nothing
    gateway = SimulatedGateway()
    waiting_for_3d_secure(database, gateway, 2)
    silent = GatewayNotAnswering()

    # when the sweeper runs
    asked = reconcile_open(database, silent, now=NOW + timedelta(minutes=10))

    # then it asked about one payment and left the other for the next sweep, which asks about both once the gateway
    # answers again
    assert (asked, silent.asked) == (1, 1)
    assert reconcile_open(database, gateway, now=NOW + timedelta(minutes=11)) == 2


def test_a_gateway_error_charges_nothing_and_a_replay_tries_again(database):
    account_id = new_account(database)
    gateway = SimulatedGateway()
    with pytest.raises(PaymentUnavailable):
        purchase(database, gateway, account_id, 100_000, "pm_card_chargeDeclinedProcessingError",
                 idempotency_key="k", now=NOW)
    assert gateway.charges(account_id) == [] and balance_of(database, account_id) == 0

    with database.unit_of_work() as session:
        payment = session.query(Payment).one()
        payment.payment_method = "pm_card_visa"  # the processor recovered (same key, next attempt)
    payment = purchase(database, gateway, account_id, 100_000, "pm_card_visa", idempotency_key="k", now=NOW)

    assert payment.status == "succeeded" and payment.attempt == 1
    assert balance_of(database, account_id) == 100_000


def test_the_simulated_gateway_makes_one_intent_and_one_charge_per_key():
    gateway = SimulatedGateway()
    customer = gateway.create_customer(account_id="a", idempotency_key="customer:a")
    intents = {gateway.create_intent(payment_id="pay_1", customer=customer, amount_cents=500, currency="usd",
                                     payment_method="pm_card_visa", description="x", idempotency_key="same")
               for _ in range(3)}
    [intent] = intents
    results = {gateway.confirm_intent(intent, off_session=True, return_url="", idempotency_key="c").charge_id
               for _ in range(3)}
    assert len(results) == 1 and len(gateway.charges()) == 1
    with pytest.raises(ValueError):
        gateway.create_intent(payment_id="pay_2", customer=customer, amount_cents=5.0, currency="usd",
                              payment_method="pm_card_visa", description="floats are not money", idempotency_key="f")


@pytest.mark.parametrize("card", ["4242 4242 4242 4242", "4242-4242-4242-4242", "4242424242424242",
                                  "pm_4242424242424242", "visa ending 4242", " "])
def test_a_payment_method_that_is_not_a_gateway_token_is_refused_without_being_stored_or_repeated(database, card):
    # given an account; when a purchase names a card number (or anything not shaped like pm_/tok_/card_)
    account_id = new_account(database)
    gateway = SimulatedGateway()
    with pytest.raises(ValidationFailed) as refused:
        purchase(database, gateway, account_id, 100_000, card, idempotency_key="buy-card", now=NOW)

    # then it is refused naming the field, never the value; nothing is charged or stored
    digits = card.replace(" ", "").replace("-", "")
    assert set(refused.value.errors) == {"payment_method"}
    assert all(digits not in text for text in (str(refused.value), *refused.value.errors.values()) if digits)
    assert gateway.charges(account_id) == []
    with database.unit_of_work() as session:
        assert session.query(Payment).count() == 0
    assert balance_of(database, account_id) == 0


def test_a_payment_waiting_for_3d_secure_is_asked_about_for_a_day_then_canceled_at_the_gateway(database):
    # given a purchase whose card asks for 3-D Secure, never completed
    account_id = new_account(database)
    gateway = SimulatedGateway()
    payment = purchase(database, gateway, account_id, 100_000, "pm_card_authenticationRequired",
                       idempotency_key="k", now=NOW)
    assert payment.status == "requires_action" and payment.action_url

    # when the sweeper runs through the day it was made, and after
    asked = []
    for later in (timedelta(minutes=5), timedelta(hours=23)):
        asked.append(reconcile_open(database, gateway, now=NOW + later))
        with database.unit_of_work() as session:
            assert session.query(Payment).one().status == "requires_action"
    for later in (timedelta(days=1, minutes=10), timedelta(days=2)):
        asked.append(reconcile_open(database, gateway, now=NOW + later))

    # then it asked for a day from when the payment began waiting (asking does not make it younger); a day on it
    # canceled the PaymentIntent, so a challenge finished later can take nothing, and recorded the payment as an
    # error that took nothing; it is not asked about again, and nothing was charged or granted
    assert asked == [1, 1, 1, 0]
    with database.unit_of_work() as session:
        abandoned = session.query(Payment).one()
    assert (abandoned.status, abandoned.decline_code) == ("error", "abandoned")
    assert gateway.find_intent(payment_id=payment.id, intent_id=payment.intent_id).status == "error"
    assert gateway.charges(account_id, status="succeeded") == [] and balance_of(database, account_id) == 0


class UnavailableFor(SimulatedGateway):
    """Times out on one account's calls: the outcome of each is unknown to the caller."""

    def __init__(self, account_id: str):
        super().__init__()
        self.account_id = account_id

    def create_customer(self, *, account_id, idempotency_key):
        if account_id == self.account_id:
            raise GatewayUnavailable("the gateway timed out")
        return super().create_customer(account_id=account_id, idempotency_key=idempotency_key)


def open_bill(database, account_id: str, key: str) -> str:
    with database.unit_of_work() as session:
        return open_payment(session, account_id, source="month_end", idempotency_key=key, credits_mc=0,
                            amount_cents=500, currency="usd", payment_method="pm_card_visa", now=NOW).id


def test_a_batch_of_payments_charges_each_once_whatever_state_each_was_left_in(database):
    # given four bills: two new, one whose collector died after storing its intent, one on a gateway that times out
    fresh, stalled, other, unreachable = (new_account(database) for _ in range(4))
    gateway = UnavailableFor(unreachable)
    payments = {account_id: open_bill(database, account_id, f"bill:{account_id}")
                for account_id in (fresh, stalled, other, unreachable)}
    customer = customer_of(database, gateway, stalled, now=NOW)
    intent = gateway.create_intent(payment_id=payments[stalled], customer=customer, amount_cents=500, currency="usd",
                                   payment_method="pm_card_visa", description="bill",
                                   idempotency_key=f"{payments[stalled]}:0:create")
    with database.unit_of_work() as session:
        payment = session.get(Payment, payments[stalled])
        payment.intent_id, payment.status = intent, "processing"

    # when the batch is charged, twice (a second collector, or a retry)
    first = charge_payments(database, gateway, list(payments.values()), now=NOW, threads=2)
    second = charge_payments(database, gateway, list(payments.values()), now=NOW, threads=2)

    # then each reachable bill is charged exactly once and the unreachable one is left open for the next collection
    for account_id in (fresh, stalled, other):
        assert first[payments[account_id]].status == second[payments[account_id]].status == "succeeded"
        assert len(gateway.charges(account_id)) == 1
    assert first[payments[unreachable]].status == "pending" and gateway.charges(unreachable) == []

    # and once the gateway answers, the next collection charges it once
    gateway.account_id = None
    third = charge_payments(database, gateway, [payments[unreachable]], now=NOW, threads=2)
    assert third[payments[unreachable]].status == "succeeded" and len(gateway.charges(unreachable)) == 1
