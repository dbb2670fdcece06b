"""The Stripe stand-in keeps Stripe's shapes and promises: every object has the fields and types of Stripe's own
fixture, one object per idempotency key, state that survives a restart, events signed as Stripe signs them."""

import json
from pathlib import Path

import pytest
import requests
import stripe

from stripe_sim import SimulatorConfig, init_app
from stripe_sim.delivery import signature_header
from tests.stripe_sim_fixtures import background_loop, stripe_stand_in  # noqa: F401  (fixtures)

FIXTURES = json.loads((Path(__file__).parents[3] / "stripe_sim" / "fixtures.json").read_text())["resources"]


def same_shape(obj, fixture, where: str) -> list[str]:
    """Where `obj` lacks a field of the fixture, has one it has not, or a field of another JSON type (null goes
    with any type: Stripe's nullable fields); nested objects are compared the same way."""
    problems = []
    if set(obj) != set(fixture):
        problems.append(f"{where}: missing {sorted(set(fixture) - set(obj))}, extra {sorted(set(obj) - set(fixture))}")
    for name in set(obj) & set(fixture):
        mine, theirs = obj[name], fixture[name]
        if mine is None or theirs is None:
            continue
        if type(mine) is not type(theirs) and not (isinstance(mine, (int, float)) and isinstance(theirs, (int, float))
                                                   and not isinstance(mine, bool) and not isinstance(theirs, bool)):
            problems.append(f"{where}.{name}: {type(mine).__name__}, Stripe's is {type(theirs).__name__}")
        elif isinstance(mine, dict) and name not in ("metadata", "data") and theirs:
            problems += same_shape(mine, theirs, f"{where}.{name}")
    return problems


def test_every_object_it_returns_has_the_fields_and_types_of_stripes_fixture(stripe_stand_in):
    # given every resource the product uses, made through the official client
    client = stripe.StripeClient(stripe_stand_in.config.api_key, base_addresses={"api": stripe_stand_in.url}).v1
    customer = client.customers.create(params={"metadata": {"account_id": "acct_1"}})
    setup = client.setup_intents.create(params={"customer": customer.id, "payment_method": "pm_card_visa",
                                                "confirm": True, "usage": "off_session"})
    intent = client.payment_intents.create(params={"amount": 2250, "currency": "usd", "customer": customer.id,
                                                   "payment_method": "pm_card_visa",
                                                   "metadata": {"payment_id": "pay_1"}})
    intent = client.payment_intents.confirm(intent.id, params={"off_session": True})
    with pytest.raises(stripe.CardError):
        client.payment_intents.create(params={"amount": 500, "currency": "usd", "customer": customer.id,
                                              "payment_method": "pm_card_chargeDeclined", "confirm": True})
    refund = client.refunds.create(params={"payment_intent": intent.id, "amount": 1000})
    session = client.checkout.sessions.create(params={"mode": "setup", "customer": customer.id,
                                                      "success_url": "http://127.0.0.1/done"})
    dispute = requests.post(f"{stripe_stand_in.url}/_sim/disputes", json={"charge": intent.latest_charge},
                            timeout=10).json()

    # when each is read back raw, as the client receives it
    objects = {
        "customer": stripe_stand_in.get(f"/v1/customers/{customer.id}"),
        "payment_method": stripe_stand_in.get(f"/v1/payment_methods/{setup.payment_method}"),
        "setup_intent": stripe_stand_in.get(f"/v1/setup_intents/{setup.id}"),
        "payment_intent": stripe_stand_in.get(f"/v1/payment_intents/{intent.id}"),
        "charge": stripe_stand_in.get(f"/v1/charges/{intent.latest_charge}"),
        "refund": refund.to_dict(),
        "checkout.session": stripe_stand_in.get(f"/v1/checkout/sessions/{session.id}"),
        "dispute": dispute,
        "event": stripe_stand_in.events()[0],
    }
    objects["event"] = {key: value for key, value in objects["event"].items() if not key.startswith("_")}

    # then each has exactly Stripe's fields, with Stripe's types (an event's object: that of its own resource)
    problems = [problem for kind, obj in objects.items() for problem in same_shape(obj, FIXTURES[kind], kind)]
    carried = objects["event"]["data"]["object"]
    problems += same_shape(carried, FIXTURES[carried["object"]], "event.data.object")
    assert problems == []
    assert {obj["object"] for obj in objects.values()} == set(objects)
    assert objects["payment_intent"]["status"] == "succeeded" and objects["charge"]["amount_refunded"] == 1000


def test_an_idempotency_key_makes_one_payment_intent_and_replays_its_answer(stripe_stand_in):
    # given one create request sent three times with the same key (a client retrying after losing the answer)
    client = stripe.StripeClient(stripe_stand_in.config.api_key, base_addresses={"api": stripe_stand_in.url}).v1
    params = {"amount": 500, "currency": "usd", "payment_method": "pm_card_visa", "metadata": {"payment_id": "p"}}
    ids = {client.payment_intents.create(params=params, options={"idempotency_key": "pay_1:0:create"}).id
           for _ in range(3)}

    # then there is one PaymentIntent, logged with its key; the same key with other parameters is refused
    assert len(ids) == 1
    assert [(pi["id"], pi["idempotency_key"]) for pi in stripe_stand_in.payment_intents()] == [(*ids, "pay_1:0:create")]
    with pytest.raises(stripe.IdempotencyError):
        client.payment_intents.create(params={**params, "amount": 900}, options={"idempotency_key": "pay_1:0:create"})


def test_its_state_survives_a_restart(background_loop, tmp_path):  # noqa: F811
    # given a stand-in that made a PaymentIntent, then stopped
    config, database = SimulatorConfig(), tmp_path / "stripe.db"
    first = background_loop.serve(init_app(config, database))
    client = stripe.StripeClient(config.api_key, base_addresses={"api": first}).v1
    intent = client.payment_intents.create(params={"amount": 500, "currency": "usd"}, options={"idempotency_key": "k"})

    # when another stand-in starts on the same file
    second = background_loop.serve(init_app(config, database))
    client = stripe.StripeClient(config.api_key, base_addresses={"api": second}).v1

    # then it knows the PaymentIntent and answers the same key with it
    assert client.payment_intents.retrieve(intent.id).amount == 500
    assert client.payment_intents.create(params={"amount": 500, "currency": "usd"},
                                         options={"idempotency_key": "k"}).id == intent.id


def test_its_events_verify_with_stripes_own_check_and_nothing_else_does(stripe_stand_in):
    client = stripe.StripeClient(stripe_stand_in.config.api_key, base_addresses={"api": stripe_stand_in.url}).v1
    client.customers.create(params={})
    intent = client.payment_intents.create(params={"amount": 500, "currency": "usd", "payment_method": "pm_card_visa",
                                                   "confirm": True})
    [event] = stripe_stand_in.events("payment_intent.succeeded")
    payload = json.dumps({key: value for key, value in event.items() if not key.startswith("_")})
    secret = stripe_stand_in.config.webhook_secret

    verified = stripe.Webhook.construct_event(payload, signature_header(payload, secret), secret)

    assert verified.type == "payment_intent.succeeded" and verified.data.object.id == intent.id
    with pytest.raises(stripe.SignatureVerificationError):
        stripe.Webhook.construct_event(payload, signature_header(payload, "whsec_forged"), secret)


def test_requests_without_its_key_are_refused(stripe_stand_in):
    client = stripe.StripeClient("sk_test_wrong", base_addresses={"api": stripe_stand_in.url}).v1
    with pytest.raises(stripe.AuthenticationError):
        client.customers.create(params={})


def test_a_payment_intent_is_canceled_as_stripe_cancels_one_and_a_decided_one_is_not(stripe_stand_in):
    # given a PaymentIntent waiting for 3-D Secure, and one that succeeded
    client = stripe.StripeClient(stripe_stand_in.config.api_key, base_addresses={"api": stripe_stand_in.url}).v1
    waiting = client.payment_intents.create(params={
        "amount": 500, "currency": "usd", "payment_method": "pm_card_authenticationRequired", "confirm": True,
        "return_url": "http://127.0.0.1/done"})
    paid = client.payment_intents.create(params={"amount": 500, "currency": "usd", "payment_method": "pm_card_visa",
                                                 "confirm": True})
    assert (waiting.status, paid.status) == ("requires_action", "succeeded")

    # when each is canceled (a reason Stripe does not know first)
    with pytest.raises(stripe.InvalidRequestError) as unknown_reason:
        client.payment_intents.cancel(waiting.id, params={"cancellation_reason": "bored"})
    canceled = client.payment_intents.cancel(waiting.id, params={"cancellation_reason": "abandoned"},
                                             options={"idempotency_key": "cancel-1"})
    with pytest.raises(stripe.InvalidRequestError) as decided:
        client.payment_intents.cancel(paid.id)

    # then the waiting one is canceled with Stripe's fields, its event sent, its challenge gone; the paid one stays
    assert unknown_reason.value.param == "cancellation_reason"
    assert (canceled.status, canceled.cancellation_reason, canceled.next_action) == ("canceled", "abandoned", None)
    assert canceled.canceled_at and same_shape(stripe_stand_in.get(f"/v1/payment_intents/{waiting.id}"),
                                               FIXTURES["payment_intent"], "payment_intent") == []
    assert [event["data"]["object"]["id"]
            for event in stripe_stand_in.events("payment_intent.canceled")] == [waiting.id]
    with pytest.raises(requests.HTTPError):
        stripe_stand_in.authenticate(waiting.id)
    assert decided.value.code == "payment_intent_unexpected_state"
    assert client.payment_intents.retrieve(paid.id).status == "succeeded"
    assert client.payment_intents.cancel(waiting.id, params={"cancellation_reason": "abandoned"},
                                         options={"idempotency_key": "cancel-1"}).id == waiting.id  # replayed
