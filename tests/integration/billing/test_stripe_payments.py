"""Payments through the official stripe client against the Stripe stand-in: the PaymentIntent's life, the
webhooks that finish it (any number of times, in any order), the sweeper, refunds and disputes, saved cards."""

import socket
import time
from datetime import UTC, datetime, timedelta

import pytest
import requests

from shared.billing import auto_recharge
from shared.billing.payment_events import handle_event, reconcile_open
from shared.billing.payments import GatewayUnavailable
from shared.billing.purchases import PaymentDeclined, charge_payment, customer_of, purchase
from shared.billing.stripe_gateway import StripeGateway
from shared.errors import ValidationFailed
from shared.ledger import book
from shared.models import AutoRecharge, DunningRun, Entry, Payment
from tests.stripe_sim_fixtures import background_loop, stripe_stand_in  # noqa: F401  (fixtures)
from tests.unit.billing.test_auto_recharge import NOW, account_with_recharge, state
from tests.unit.billing.test_purchases import new_account


def now() -> datetime:
    return datetime.now(UTC)


def balance(database, account_id) -> int:
    with database.unit_of_work() as session:
        return book.balance(session, account_id, now=now()).balance


def deliver(database, gateway, events, times: int = 1) -> list[str]:
    return [handle_event(database, gateway, event, now=now()).detail for _ in range(times) for event in events]


def payment_row(database, payment_id) -> Payment:
    with database.unit_of_work() as session:
        return session.get(Payment, payment_id)


def waiting_for_3d_secure(database, gateway) -> tuple[str, Payment]:
    """A new account's purchase with a card that asks for 3-D Secure, not yet authenticated."""
    account_id = new_account(database)
    return account_id, purchase(database, gateway, account_id, 100_000, "pm_card_authenticationRequired",
                                idempotency_key="buy", now=now(), return_url="http://127.0.0.1/billing/done")


class CrashAfter(StripeGateway):
    """Dies once right after the named call reached Stripe: the worker killed between it and "recorded"."""

    def __init__(self, api_key, api_base, call: str):
        super().__init__(api_key, api_base)
        self.call = call

    def __getattribute__(self, name):
        method = super().__getattribute__(name)
        if name != object.__getattribute__(self, "call"):
            return method

        def crashing(*args, **kwargs):
            method(*args, **kwargs)
            self.call = None
            raise ConnectionError(f"worker killed after {name}")
        return crashing


def test_pm_card_visa_lands_the_credits_once_whatever_the_webhooks_do(sqlite_database, stripe_stand_in):
    # given an account buying 500 credits with pm_card_visa
    database, gateway = sqlite_database, stripe_stand_in.gateway()
    account_id = new_account(database)
    payment = purchase(database, gateway, account_id, 500_000, "pm_card_visa", idempotency_key="buy", now=now())

    # when every event is delivered three times, newest first
    deliver(database, gateway, list(reversed(stripe_stand_in.events())), times=3)

    # then the credits landed once, from one PaymentIntent made with our payment's key and id
    assert payment.status == "succeeded" and balance(database, account_id) == 500_000
    [intent] = stripe_stand_in.payment_intents()
    assert intent["idempotency_key"] == f"{payment.id}:0:create"
    assert intent["object"]["metadata"] == {"payment_id": payment.id} and intent["id"] == payment.intent_id
    assert intent["object"]["amount"] == payment.amount_cents == 2250


def test_a_declined_card_carries_stripes_decline_code_and_lands_nothing(sqlite_database, stripe_stand_in):
    database, gateway = sqlite_database, stripe_stand_in.gateway()
    account_id = new_account(database)

    with pytest.raises(PaymentDeclined) as declined:
        purchase(database, gateway, account_id, 100_000, "pm_card_chargeDeclinedInsufficientFunds",
                 idempotency_key="buy", now=now())
    deliver(database, gateway, stripe_stand_in.events())

    assert declined.value.payment.status == "declined" and declined.value.payment.decline_code == "insufficient_funds"
    assert balance(database, account_id) == 0


def test_3d_secure_leaves_the_purchase_requires_action_until_the_customer_authenticates(sqlite_database,
                                                                                        stripe_stand_in):
    # given a purchase with a card that asks for 3-D Secure
    database, gateway = sqlite_database, stripe_stand_in.gateway()
    account_id, payment = waiting_for_3d_secure(database, gateway)
    assert payment.status == "requires_action" and payment.action_url.endswith(f"/authenticate/{payment.intent_id}")
    assert balance(database, account_id) == 0

    # when the customer authenticates and Stripe's webhook arrives
    stripe_stand_in.authenticate(payment.intent_id)
    deliver(database, gateway, stripe_stand_in.events("payment_intent.succeeded"))

    # then the purchase completed and the credits landed
    assert payment_row(database, payment.id).status == "succeeded" and balance(database, account_id) == 100_000


def test_3d_secure_left_unfinished_for_a_day_is_canceled_at_stripe_and_can_take_nothing_later(sqlite_database,
                                                                                              stripe_stand_in):
    # given a purchase waiting for 3-D Secure that the customer leaves unfinished
    database, gateway = sqlite_database, stripe_stand_in.gateway()
    account_id, payment = waiting_for_3d_secure(database, gateway)

    # when the sweeper runs a day later, then the customer comes back to the challenge and Stripe's events arrive
    assert reconcile_open(database, gateway, now=now() + timedelta(days=1, minutes=1)) == 1
    with pytest.raises(requests.HTTPError):
        stripe_stand_in.authenticate(payment.intent_id)
    deliver(database, gateway, stripe_stand_in.events())

    # then Stripe's PaymentIntent is canceled and charged nothing, and the payment is an error that took nothing
    [intent] = stripe_stand_in.payment_intents()
    assert (intent["object"]["status"], intent["object"]["cancellation_reason"]) == ("canceled", "abandoned")
    assert intent["object"]["amount_received"] == 0 and intent["object"]["latest_charge"] is None
    row = payment_row(database, payment.id)
    assert (row.status, row.decline_code, row.charge_id) == ("error", "abandoned", None)
    assert balance(database, account_id) == 0


class FinishedMeanwhile(StripeGateway):
    """Reads a PaymentIntent as it was just before the customer finished 3-D Secure: the customer finishes
    between the sweeper's read and its cancel."""

    def __init__(self, stand_in):
        super().__init__(stand_in.config.api_key, stand_in.url)
        self.stand_in = stand_in

    def find_intent(self, *, payment_id, intent_id):
        found = super().find_intent(payment_id=payment_id, intent_id=intent_id)
        if found is not None and found.status == "requires_action":
            self.stand_in.authenticate(found.intent_id)
        return found


@pytest.mark.parametrize("finished", ["before the sweep", "between its read and its cancel"])
def test_3d_secure_finished_before_the_cancel_lands_the_credits_though_its_webhook_was_lost(sqlite_database,
                                                                                            stripe_stand_in, finished):
    # given a purchase waiting for 3-D Secure, finished by the customer at the last moment, its webhook lost
    database = sqlite_database
    account_id, payment = waiting_for_3d_secure(database, stripe_stand_in.gateway())
    if finished == "before the sweep":
        stripe_stand_in.authenticate(payment.intent_id)
    gateway = FinishedMeanwhile(stripe_stand_in) if finished != "before the sweep" else stripe_stand_in.gateway()

    # when the sweeper comes to it a day on, and again a minute later
    for minutes in (1, 2):
        reconcile_open(database, gateway, now=now() + timedelta(days=1, minutes=minutes))

    # then nothing was canceled (Stripe refused a cancel that came second), the payment is recorded succeeded
    # and the credits landed once
    [intent] = stripe_stand_in.payment_intents()
    assert intent["object"]["status"] == "succeeded" and stripe_stand_in.events("payment_intent.canceled") == []
    assert payment_row(database, payment.id).status == "succeeded" and balance(database, account_id) == 100_000


def test_3d_secure_failed_with_its_webhook_lost_is_recorded_declined_not_canceled(sqlite_database, stripe_stand_in):
    # given a purchase whose customer failed 3-D Secure, the webhook lost
    database, gateway = sqlite_database, stripe_stand_in.gateway()
    account_id, payment = waiting_for_3d_secure(database, gateway)
    requests.post(f"{stripe_stand_in.url}/authenticate/{payment.intent_id}", data={"action": "fail"},
                  allow_redirects=False, timeout=10).raise_for_status()

    # when the sweeper comes to it a day on
    reconcile_open(database, gateway, now=now() + timedelta(days=1, minutes=1))

    # then it is recorded as the bank's decline, not as abandoned, and nothing was canceled or taken
    row = payment_row(database, payment.id)
    assert (row.status, row.decline_code) == ("declined", "payment_intent_authentication_failure")
    assert stripe_stand_in.events("payment_intent.canceled") == [] and balance(database, account_id) == 0


def test_a_sweeper_killed_after_its_cancel_reached_stripe_records_it_on_the_next_sweep(sqlite_database,
                                                                                       stripe_stand_in):
    # given a purchase left waiting for 3-D Secure, and a sweeper killed right after Stripe canceled it
    database = sqlite_database
    account_id, payment = waiting_for_3d_secure(database, stripe_stand_in.gateway())
    crashing = CrashAfter(stripe_stand_in.config.api_key, stripe_stand_in.url, "cancel_intent")
    reconcile_open(database, crashing, now=now() + timedelta(days=1, minutes=1))
    assert payment_row(database, payment.id).status == "requires_action"

    # when the next sweep runs
    reconcile_open(database, stripe_stand_in.gateway(), now=now() + timedelta(days=1, minutes=2))

    # then the payment is recorded abandoned, from the one cancel Stripe made
    row = payment_row(database, payment.id)
    assert (row.status, row.decline_code) == ("error", "abandoned") and balance(database, account_id) == 0
    assert len(stripe_stand_in.events("payment_intent.canceled")) == 1


def test_a_payment_the_gateway_does_not_know_does_not_hold_up_the_others(sqlite_database, stripe_stand_in, caplog):
    # given a purchase left waiting for 3-D Secure whose PaymentIntent Stripe does not know (other keys since),
    # and another account's purchase whose worker died after Stripe charged it, its webhook lost
    database, gateway = sqlite_database, stripe_stand_in.gateway()
    _, unknown = waiting_for_3d_secure(database, gateway)
    with database.unit_of_work() as session:
        session.get(Payment, unknown.id).intent_id = "pi_unknown"
    paid_account = new_account(database)
    crashing = CrashAfter(stripe_stand_in.config.api_key, stripe_stand_in.url, "confirm_intent")
    with pytest.raises(ConnectionError):
        purchase(database, crashing, paid_account, 100_000, "pm_card_visa", idempotency_key="paid", now=now())

    # when the sweeper runs a day on
    reconcile_open(database, gateway, now=now() + timedelta(days=1, minutes=1))

    # then the charged purchase's credits landed; the unknown one is logged and left open for the next sweep
    assert balance(database, paid_account) == 100_000
    assert payment_row(database, unknown.id).status == "requires_action"
    assert f"payment {unknown.id} could not be reconciled" in caplog.text


@pytest.mark.parametrize("crash_after", ["create_intent", "confirm_intent"])
def test_a_worker_killed_between_stripe_and_recorded_is_finished_by_the_sweeper_with_one_payment_intent(
        sqlite_database, stripe_stand_in, crash_after):
    # given a purchase whose worker died right after the PaymentIntent was created (or confirmed), and no webhook
    database = sqlite_database
    account_id = new_account(database)
    crashing = CrashAfter(stripe_stand_in.config.api_key, stripe_stand_in.url, crash_after)
    with pytest.raises(ConnectionError):
        purchase(database, crashing, account_id, 100_000, "pm_card_visa", idempotency_key="buy", now=now())
    assert balance(database, account_id) == 0

    # when the sweeper runs
    assert reconcile_open(database, stripe_stand_in.gateway(), now=now() + timedelta(minutes=5)) == 1

    # then the credits landed once and Stripe holds one PaymentIntent for the payment
    [payment] = [payment_row(database, intent["object"]["metadata"]["payment_id"])
                 for intent in stripe_stand_in.payment_intents()]
    assert payment.status == "succeeded" and balance(database, account_id) == 100_000


def test_a_purchase_killed_after_its_confirm_with_the_customers_return_url_holds_up_no_sweep(sqlite_database,
                                                                                             stripe_stand_in):
    # given two accounts' purchases made through the API, with the customer's return_url, whose workers died right
    # after Stripe confirmed them, and no webhook: the sweeper, which has no return_url, confirms under the same key
    database, paid = sqlite_database, []
    for key in ("first", "second"):
        paid.append(new_account(database))
        crashing = CrashAfter(stripe_stand_in.config.api_key, stripe_stand_in.url, "confirm_intent")
        with pytest.raises(ConnectionError):
            purchase(database, crashing, paid[-1], 100_000, "pm_card_visa", idempotency_key=key, now=now(),
                     return_url="http://127.0.0.1/billing/done")

    # when the sweeper runs
    assert reconcile_open(database, stripe_stand_in.gateway(), now=now() + timedelta(minutes=5)) == 2

    # then Stripe's answer to a key used with other parameters sent it to read each intent: both purchases landed
    assert [balance(database, account_id) for account_id in paid] == [100_000, 100_000]
    assert len(stripe_stand_in.payment_intents()) == 2


def test_a_create_retried_with_other_parameters_under_its_key_answers_the_payment_intent_the_key_made(
        sqlite_database, stripe_stand_in):
    # given a payment whose PaymentIntent was created, then the worker died before storing its id
    database = sqlite_database
    crashing = CrashAfter(stripe_stand_in.config.api_key, stripe_stand_in.url, "create_intent")
    with pytest.raises(ConnectionError):
        purchase(database, crashing, new_account(database), 100_000, "pm_card_visa", idempotency_key="buy", now=now())
    [made] = stripe_stand_in.payment_intents()
    payment = payment_row(database, made["object"]["metadata"]["payment_id"])

    # when the create is made again under its key by a release that words the description anew
    again = stripe_stand_in.gateway().create_intent(
        payment_id=payment.id, customer=made["object"]["customer"], amount_cents=payment.amount_cents,
        currency=payment.currency, payment_method=payment.payment_method, description="creditq: reworded",
        idempotency_key=f"{payment.id}:{payment.attempt}:create")

    # then Stripe's answer to a key used with other parameters is read as the intent that key made: no second one
    assert again == made["object"]["id"] and len(stripe_stand_in.payment_intents()) == 1


def test_past_stripes_idempotency_window_the_payment_intent_is_found_by_our_payment_id(sqlite_database,
                                                                                        stripe_stand_in):
    # given a payment whose PaymentIntent was created, then the worker died before storing its id
    database = sqlite_database
    account_id = new_account(database)
    crashing = CrashAfter(stripe_stand_in.config.api_key, stripe_stand_in.url, "create_intent")
    with pytest.raises(ConnectionError):
        purchase(database, crashing, account_id, 100_000, "pm_card_visa", idempotency_key="buy", now=now())
    with database.unit_of_work() as session:
        payment_id = session.query(Payment).one().id

    # when it is completed two days later (Stripe has forgotten the key) by a gateway that would make a new one
    class Forgetful(StripeGateway):
        def create_intent(self, **kwargs):
            return super().create_intent(**{**kwargs, "idempotency_key": "forgotten-" + kwargs["idempotency_key"]})

    forgetful = Forgetful(stripe_stand_in.config.api_key, stripe_stand_in.url)
    payment = charge_payment(database, forgetful, payment_id, now=now() + timedelta(days=2))

    # then the first PaymentIntent, found by metadata.payment_id, is the one confirmed: one charge
    assert payment.status == "succeeded" and len(stripe_stand_in.payment_intents()) == 1
    assert balance(database, account_id) == 100_000


def test_another_accounts_payment_method_is_refused_and_nothing_is_charged(sqlite_database, stripe_stand_in):
    # given account B's saved card
    database, gateway = sqlite_database, stripe_stand_in.gateway()
    account_a, account_b = new_account(database), new_account(database)
    card_of_b = gateway.save_card(customer=customer_of(database, gateway, account_b, now=now()),
                                  payment_method="pm_card_visa", idempotency_key="save-b").payment_method

    # when account A pays with it
    with pytest.raises(ValidationFailed) as refused:
        purchase(database, gateway, account_a, 100_000, card_of_b, idempotency_key="buy", now=now())

    # then it is refused on that field, and no PaymentIntent nor payment exists
    assert set(refused.value.errors) == {"payment_method"}
    assert stripe_stand_in.payment_intents() == []
    with database.unit_of_work() as session:
        assert session.query(Payment).count() == 0


def test_refunds_take_back_pro_rata_disputes_take_the_rest_and_a_won_dispute_gives_it_back(database,
                                                                                          stripe_stand_in):
    # given 500 credits bought for $22.50 (on SQLite and on PostgreSQL)
    gateway = stripe_stand_in.gateway()
    account_id = new_account(database)
    payment = purchase(database, gateway, account_id, 500_000, "pm_card_visa", idempotency_key="buy", now=now())

    # when half is refunded (the event delivered twice), then the rest disputed
    stripe_stand_in.post("/v1/refunds", payment_intent=payment.intent_id, amount="1125").raise_for_status()
    deliver(database, gateway, stripe_stand_in.events("charge.refunded"), times=2)
    after_refund = balance(database, account_id)
    dispute = requests.post(f"{stripe_stand_in.url}/_sim/disputes", json={"charge": payment.charge_id},
                            timeout=10).json()
    deliver(database, gateway, stripe_stand_in.events("charge.dispute.created"), times=2)
    after_dispute = balance(database, account_id)
    requests.post(f"{stripe_stand_in.url}/_sim/disputes/{dispute['id']}/close", json={"status": "won"}, timeout=10)
    deliver(database, gateway, stripe_stand_in.events("charge.dispute.closed"), times=2)

    # then each step moved the credits once, with a ledger entry
    assert (after_refund, after_dispute, balance(database, account_id)) == (250_000, 0, 250_000)
    with database.unit_of_work() as session:
        kinds = [(e.kind, e.amount) for e in session.query(Entry).filter(Entry.account_id == account_id)
                 .order_by(Entry.id)]
    assert kinds == [("purchase", 500_000), ("refund", -250_000), ("dispute", -250_000), ("purchase", 250_000)]
    assert payment_row(database, payment.id).status == "refunded"


def test_a_card_saved_on_the_setup_page_becomes_the_card_on_file_and_resumes_auto_recharge(sqlite_database,
                                                                                           stripe_stand_in):
    # given an account whose auto-recharge was disabled by declines
    database, gateway = sqlite_database, stripe_stand_in.gateway()
    account_id = new_account(database)
    with database.unit_of_work() as session:
        auto_recharge.configure(session, account_id, enabled=True, threshold_mc=10_000, credits_mc=100_000,
                                payment_method="pm_card_chargeDeclined", now=now())
        session.get(AutoRecharge, account_id).disabled_reason = "3 payments in a row were declined"

    # when the customer saves a card on the setup page and Stripe's webhooks arrive (twice each)
    session = gateway.setup_session(customer=customer_of(database, gateway, account_id, now=now()),
                                    account_id=account_id, success_url="http://127.0.0.1/billing/done",
                                    cancel_url="http://127.0.0.1/billing/done")
    assert stripe_stand_in.complete_checkout(session.url).status_code == 303
    details = deliver(database, gateway, stripe_stand_in.events(), times=2)

    # then that card is on file and auto-recharge is ready again; a replayed event changed nothing
    with database.unit_of_work() as session_:
        view = auto_recharge.get_settings(session_, account_id)
    card = gateway.card(view.payment_method)
    assert card.last4 == "4242" and view.disabled_reason is None and view.enabled
    assert details.count("replayed: handled before") == len(details) // 2


def test_a_recharge_declined_by_webhook_backs_off_and_starts_dunning(sqlite_database, stripe_stand_in):
    # given an auto-recharge whose worker died right after Stripe declined its confirmation (no answer recorded)
    database = sqlite_database
    account_id = account_with_recharge(database, "pm_card_chargeCustomerFail")
    crashing = CrashAfter(stripe_stand_in.config.api_key, stripe_stand_in.url, "confirm_intent")
    with pytest.raises(ConnectionError):
        auto_recharge.run(database, crashing, account_id, now=NOW)
    assert state(database, account_id).in_flight

    # when Stripe's payment_intent.payment_failed arrives (twice)
    deliver(database, stripe_stand_in.gateway(), stripe_stand_in.events("payment_intent.payment_failed"), times=2)

    # then the claim is released, the next try backs off, and one dunning run is open for the amount
    view = state(database, account_id)
    assert (view.in_flight, view.consecutive_failures) == (False, 1) and view.next_attempt_at is not None
    with database.unit_of_work() as session:
        [run] = session.query(DunningRun).filter(DunningRun.account_id == account_id).all()
        assert run.status == "open" and run.reason == "auto_recharge"
    assert balance(database, account_id) == 90_000


def test_a_stripe_that_stalls_is_given_up_on_after_the_gateways_own_timeout():
    # given a Stripe that takes connections and never answers, and a gateway that waits 0.2 s for an answer
    with socket.create_server(("127.0.0.1", 0)) as stalled:
        gateway = StripeGateway("sk_test_stalled", f"http://127.0.0.1:{stalled.getsockname()[1]}", timeout=0.2)

        # when the sweeper asks it about a payment
        started = time.monotonic()
        with pytest.raises(GatewayUnavailable):
            gateway.find_intent(payment_id="pay_1", intent_id="pi_1")

    # then it gave up after three tries of its own timeout and the client's back-off, not of the client's 80 s
    assert time.monotonic() - started < 20
