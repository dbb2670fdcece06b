"""Stripe over the real processes (web, worker, the Stripe stand-in, Redis, PostgreSQL): credits land once however
the webhooks arrive or fail to, declines and 3-D Secure, forged events, and kill -9 of the worker or the stand-in
in the middle of a payment never charges twice."""

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from stripe_sim.delivery import signature_header
from tests.e2e.test_send_pipeline_e2e import ledger_verify
from tests.support.stack import ADMIN_KEY, Stack

pytestmark = pytest.mark.e2e
OPERATOR = {"Authorization": f"Bearer {ADMIN_KEY}"}


@pytest.fixture(scope="module")
def stack(postgres_server, tmp_path_factory):
    env = {"CREDITQ_PAYMENT_SWEEP_SECONDS": "1", "STRIPE_SIM_EVENT_RETRY_MS": "100",
           "CREDITQ_SENDER_RATES": "long_code=1000,toll_free=1000,short_code=1000", "CREDITQ_KEY_RATE_LIMIT": "0"}
    with Stack(postgres_server, tmp_path_factory.mktemp("stack"), database_name="e2e_stripe", env=env,
               worker_processes=1, worker_threads=4) as running:
        yield running


@pytest.fixture(autouse=True)
def stand_in_defaults(stack):
    yield
    if "stripe-sim" in stack.processes:
        configure(stack, event_duplicates=1, event_reorder=False, event_delay_ms=0, event_loss_rate=0.0,
                  event_failure_rate=0.0, response_delay_ms=0)


def configure(stack, **knobs) -> None:
    requests.post(f"{stack.stripe_url}/_sim/config", json=knobs, timeout=10).raise_for_status()


def new_account(stack, n: int) -> tuple[str, dict]:
    created = requests.post(f"{stack.url}/v1/accounts", headers=OPERATOR, timeout=10,
                            json={"name": f"Buyer {n}", "timezone": "UTC"})
    assert created.status_code == 201, created.text
    return created.json()["id"], {"Authorization": f"Bearer {created.json()['api_key']}"}


def balance(stack, account_id: str, headers: dict) -> str:
    return requests.get(f"{stack.url}/v1/accounts/{account_id}/balance", headers=headers, timeout=10).json()["balance"]


def buy(stack, account_id: str, headers: dict, card: str, key: str | None = None) -> requests.Response:
    return requests.post(f"{stack.url}/v1/accounts/{account_id}/purchases", timeout=30,
                         headers={**headers, **({"Idempotency-Key": key} if key else {})},
                         json={"credits": "100", "payment_method": card})


def intents(stack) -> list[dict]:
    return requests.get(f"{stack.stripe_url}/_sim/payment_intents", timeout=10).json()["data"]


def events(stack) -> list[dict]:
    return requests.get(f"{stack.stripe_url}/_sim/events", timeout=10).json()["data"]


def eventually(check, what: str, stack, timeout: float = 60.0):
    deadline = time.monotonic() + timeout
    while not (result := check()):
        if time.monotonic() > deadline:
            pytest.fail(f"{what} not seen after {timeout:.0f}s\n{stack.log('worker')[-2000:]}\n"
                        f"{stack.log('web')[-2000:]}")
        time.sleep(0.2)
    return result


def one_intent_per_key(stack) -> None:
    keys = [intent["idempotency_key"] for intent in intents(stack)]
    assert len(keys) == len(set(keys)), keys


def test_pm_card_visa_lands_credits_once_with_every_event_delivered_three_times_out_of_order(stack):
    # given Stripe delivering each event three times, newest first, late, and failing half its attempts (retried)
    account_id, headers = new_account(stack, 1)
    configure(stack, event_duplicates=3, event_reorder=True, event_delay_ms=300, event_failure_rate=0.5)

    # when the account buys 100 credits with pm_card_visa
    response = buy(stack, account_id, headers, "pm_card_visa", key="buy-visa")
    assert response.status_code == 201, response.text
    payment = response.json()
    eventually(lambda: all(event["_delivered"] for event in events(stack)), "every event delivered", stack)

    # then the credits landed once, from the one PaymentIntent of our payment
    assert payment["status"] == "succeeded" and balance(stack, account_id, headers) == "100"
    assert [i["object"]["metadata"]["payment_id"] for i in intents(stack) if i["id"] == payment["intent_id"]] == [
        payment["id"]]
    assert ledger_verify(stack).returncode == 0


def test_a_declined_card_is_a_402_with_stripes_decline_code_and_no_credits(stack):
    account_id, headers = new_account(stack, 2)
    response = buy(stack, account_id, headers, "pm_card_chargeDeclined")
    assert response.status_code == 402 and response.json()["decline_code"] == "generic_decline"
    assert balance(stack, account_id, headers) == "0"


def test_3d_secure_then_completed_lands_credits_even_when_the_webhook_is_lost(stack, broker):
    # given a purchase that asks for 3-D Secure, and a Stripe whose webhooks are all lost
    account_id, headers = new_account(stack, 3)
    response = buy(stack, account_id, headers, "pm_card_authenticationRequired")
    assert response.status_code == 202 and response.json()["status"] == "requires_action", response.text
    configure(stack, event_loss_rate=1.0)

    # when the customer authenticates on Stripe's page, and the sweeper runs
    challenge = requests.post(response.json()["action_url"], data={"action": "complete"}, timeout=10,
                              allow_redirects=False)
    assert challenge.status_code == 303
    time.sleep(1.1)  # the payment must be older than CREDITQ_PAYMENT_SWEEP_SECONDS for the sweeper to ask
    stack.enqueue(broker, "dunning_tick")

    # then the credits land once
    eventually(lambda: balance(stack, account_id, headers) == "100", "the swept purchase's credits", stack)


def test_forged_and_stale_events_are_refused(stack):
    payload = json.dumps({"id": "evt_forged", "object": "event", "type": "payment_intent.succeeded",
                          "data": {"object": {"id": "pi_x", "metadata": {}}}})
    forged = requests.post(f"{stack.url}/webhooks/stripe", data=payload, timeout=10,
                           headers={"Stripe-Signature": signature_header(payload, "whsec_guess")})
    stale = requests.post(f"{stack.url}/webhooks/stripe", data=payload, timeout=10, headers={
        "Stripe-Signature": signature_header(payload, stack.env.get("STRIPE_WEBHOOK_SECRET", "whsec_creditq_stand_in"),
                                             int(time.time()) - 3600)})
    assert (forged.status_code, stale.status_code) == (400, 400)


def test_kill_9_of_the_stand_in_mid_request_then_a_retry_charges_once(stack):
    # given a Stripe that saves each request's work, then waits before answering
    account_id, headers = new_account(stack, 5)
    configure(stack, response_delay_ms=10_000)
    before = len(intents(stack))
    answers: list[requests.Response] = []
    request = threading.Thread(target=lambda: answers.append(buy(stack, account_id, headers, "pm_card_visa",
                                                                 key="buy-kill-stripe")))
    request.start()

    # when the stand-in is killed -9 once the PaymentIntent exists, and restarted
    eventually(lambda: len(intents(stack)) > before, "the PaymentIntent created", stack)
    stack.kill_stripe_sim()
    request.join(60)
    stack.restart_stripe_sim()
    assert answers[0].status_code == 503, answers[0].text

    # then the same request again pays with the same PaymentIntent: one per key, credits once
    retried = buy(stack, account_id, headers, "pm_card_visa", key="buy-kill-stripe")
    assert retried.status_code == 201 and retried.json()["status"] == "succeeded", retried.text
    one_intent_per_key(stack)
    assert len(intents(stack)) == before + 1
    assert balance(stack, account_id, headers) == "100"


def test_kill_9_of_the_worker_between_payment_intent_created_and_recorded(stack, broker):
    # given an account at 10 credits whose auto-recharge buys 100 under 50, and a Stripe slow to answer
    account_id, headers = new_account(stack, 6)
    requests.post(f"{stack.url}/v1/accounts/{account_id}/grants", headers=OPERATOR, timeout=10,
                  json={"credits": "10", "kind": "purchase"}).raise_for_status()
    saved = requests.put(f"{stack.url}/v1/accounts/{account_id}/auto-recharge", headers=headers, timeout=30,
                         json={"enabled": True, "threshold": "50", "credits": "100", "payment_method": "pm_card_visa"})
    assert saved.status_code == 200, saved.text
    before = len(intents(stack))
    configure(stack, response_delay_ms=30_000)

    # when the recharge's PaymentIntent is created and the worker is killed -9 before it records it
    stack.enqueue(broker, "auto_recharge", account_id, queue_name="payments")
    eventually(lambda: len(intents(stack)) > before, "the recharge's PaymentIntent", stack)
    stack.kill_worker()
    configure(stack, response_delay_ms=0)
    stack.start_worker()
    time.sleep(1.1)  # older than CREDITQ_PAYMENT_SWEEP_SECONDS
    stack.enqueue(broker, "dunning_tick")

    # then after the restart the sweeper finishes it with the same PaymentIntent: credits once
    eventually(lambda: balance(stack, account_id, headers) == "110", "the recharge's credits", stack)
    one_intent_per_key(stack)
    assert len(intents(stack)) == before + 1
    assert ledger_verify(stack).returncode == 0


def test_a_refund_takes_the_credits_back_with_a_ledger_entry(stack):
    # given 100 credits bought with pm_card_visa
    account_id, headers = new_account(stack, 7)
    bought = buy(stack, account_id, headers, "pm_card_visa")
    assert bought.status_code == 201, bought.text

    # when the charge is refunded in full at Stripe (the webhook comes to the web process)
    refund = requests.post(f"{stack.stripe_url}/v1/refunds", data={"payment_intent": bought.json()["intent_id"]},
                           headers={"Authorization": "Bearer sk_test_creditq_stand_in"}, timeout=10)
    assert refund.status_code == 200, refund.text

    # then the credits are taken back once, with a `refund` entry
    eventually(lambda: balance(stack, account_id, headers) == "0", "the refund taken back", stack)
    entries = requests.get(f"{stack.url}/v1/accounts/{account_id}/transactions", headers=headers, timeout=10).json()
    assert [(e["kind"], e["credits"]) for e in entries["data"]][:1] == [("refund", "-100")]
    assert ledger_verify(stack).returncode == 0


def test_200_sends_settling_across_the_auto_recharge_threshold_make_one_payment_intent(stack):
    # given an account with 250 credits that recharges 100 with pm_card_visa when under 100, and a Stripe slow to
    # answer, so the recharge is still in flight while the other settlements cross the threshold too
    account_id, headers = new_account(stack, 9)
    granted = requests.post(f"{stack.url}/v1/accounts/{account_id}/grants", headers=OPERATOR, timeout=10,
                            json={"credits": "250", "kind": "purchase"})
    assert granted.status_code == 201, granted.text
    number = requests.post(f"{stack.url}/v1/accounts/{account_id}/numbers", headers=OPERATOR, timeout=10,
                           json={"phone": "+14155550777", "type": "long_code"})
    assert number.status_code == 201, number.text
    recharge = requests.put(f"{stack.url}/v1/accounts/{account_id}/auto-recharge", headers=headers, timeout=30,
                            json={"enabled": True, "threshold": "100", "credits": "100", "payment_method": "pm_card_visa"})
    assert recharge.status_code == 200, recharge.text
    configure(stack, response_delay_ms=300)
    spent_before = balance(stack, account_id, headers)

    # when 200 texts are sent at once and Twilio reports each delivered (their settlements land in the web's
    # callback batches, each seeing the pool under the threshold from the 151st on)
    def send(i: int) -> int:
        return requests.post(f"{stack.url}/v1/messages", headers=headers, timeout=60,
                             json={"to": "+14155550100", "from": "+14155550777", "body": f"race {i}"}).status_code

    with ThreadPoolExecutor(max_workers=20) as pool:
        assert set(pool.map(send, range(200))) == {202}

    def settled() -> bool:
        page = requests.get(f"{stack.url}/v1/messages", headers=headers, timeout=10, params={"limit": 500}).json()
        return sum(message["credits_charged"] is not None for message in page["data"]) == 200

    eventually(settled, "200 settled texts", stack, timeout=120)

    def recharges() -> list[dict]:
        payments = requests.get(f"{stack.url}/v1/accounts/{account_id}/payments", headers=headers, timeout=10,
                                params={"source": "auto_recharge"}).json()["data"]
        return payments if payments and all(p["status"] not in ("pending", "processing") for p in payments) else []

    payments = eventually(recharges, "the auto-recharge's outcome", stack)

    # then one recharge was made, one PaymentIntent charged for it, and the credits are right to the credit
    assert [payment["status"] for payment in payments] == ["succeeded"]
    made = [i for i in intents(stack) if i["object"]["metadata"].get("payment_id") == payments[0]["id"]]
    assert len(made) == 1 and made[0]["object"]["status"] == "succeeded"
    assert (spent_before, balance(stack, account_id, headers)) == ("250", "150")
    assert ledger_verify(stack).returncode == 0
