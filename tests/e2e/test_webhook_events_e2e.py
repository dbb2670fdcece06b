"""Events pushed to an integrator's webhook receiver over the real processes (web, worker, Twilio simulator, Redis,
PostgreSQL): a small aiohttp receiver in the test verifies each request with the `standardwebhooks` package and
de-duplicates by event id, while it answers 500 twice, times out once, and the worker is killed -9 mid-delivery.

Backoff and timeouts are shortened by configuration (CREDITQ_WEBHOOK_*), never slept off; the test waits on
stored facts and on what the receiver saw, enqueueing the sweepers as the scheduler would.
"""

import asyncio
import threading
import time
import uuid

import pytest
import requests
from aiohttp import web
from sqlalchemy import select
from standardwebhooks.webhooks import Webhook

from shared.config import SIMULATOR_ACCOUNT_SID, SIMULATOR_AUTH_TOKEN
from shared.models import Message, WebhookDelivery
from tests.e2e.test_send_pipeline_e2e import new_account
from tests.support.ports import free_port
from tests.support.stack import Stack
from twilio_sim.signature import twilio_signature

pytestmark = pytest.mark.e2e

RECIPIENT = "+14155550100"


@pytest.fixture(scope="module")
def stack(postgres_server, tmp_path_factory):
    env = {
        "CREDITQ_ENV": "development",  # the receiver is on this machine, over http
        "CREDITQ_WEBHOOK_TIMEOUT_SECONDS": "1",
        "CREDITQ_WEBHOOK_RETRY_BASE_SECONDS": "0.2",
        "CREDITQ_WEBHOOK_RETRY_MAX_SECONDS": "1",
        "CREDITQ_SWEEP_STALE_SECONDS": "2",
        "CREDITQ_SENDER_RATES": "long_code=1000,toll_free=1000,short_code=1000",
        "TWILIO_SIM_CALLBACK_DELAY_MS": "50",
    }
    with Stack(postgres_server, tmp_path_factory.mktemp("stack"), database_name="e2e_webhooks", env=env,
               worker_processes=1, worker_threads=4) as running:
        yield running


class Receiver:
    """An integrator's endpoint: verifies every request, answers the first ones as `script` says (500, a timeout,
    a request held until the worker is killed), then 200; keeps each event once, by its id."""

    def __init__(self, script: list[str]):
        self.script = list(script)
        self.secret: str | None = None
        self.requests: list[tuple[str, str]] = []  # (webhook-id, what was answered)
        self.unverified = 0
        self.events: dict[str, dict] = {}  # de-duplicated by id
        self.holding = threading.Event()
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/hooks"
        self._loop = asyncio.new_event_loop()
        self._started = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()
        self._started.wait(10)

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.text()
        try:
            payload = Webhook(self.secret).verify(body, dict(request.headers))
        except Exception:
            self.unverified += 1
            return web.Response(status=400)
        answer = self.script.pop(0) if self.script else "ok"
        self.requests.append((request.headers["webhook-id"], answer))
        if answer == "500":
            return web.Response(status=500, text="busy")
        if answer == "timeout":
            await asyncio.sleep(3)  # past the worker's 1 s: it gives up, though this request was taken
        if answer == "hold":
            self.holding.set()
            await asyncio.sleep(5)  # the worker waiting for this answer is killed meanwhile
        self.events.setdefault(payload["id"], payload)
        return web.Response(status=204)

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        app = web.Application()
        app.router.add_post("/hooks", self.handle)
        runner = web.AppRunner(app)
        self._loop.run_until_complete(runner.setup())
        self._loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", self.port).start())
        self._started.set()
        self._loop.run_forever()

    def stop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)


@pytest.fixture
def receiver():
    started = Receiver(["500", "500", "timeout", "hold"])
    yield started
    started.stop()


def inbound_reply(stack, to: str, body: str) -> None:
    """A text from the recipient to the account's number, as Twilio delivers it: signed with the account's token."""
    sid = "SM" + uuid.uuid4().hex
    params = {"MessageSid": sid, "SmsSid": sid, "AccountSid": SIMULATOR_ACCOUNT_SID, "From": RECIPIENT, "To": to,
              "Body": body, "NumSegments": "1", "NumMedia": "0", "ApiVersion": "2010-04-01"}
    url = f"{stack.url}/webhooks/twilio/inbound"
    response = requests.post(url, data=params, timeout=10,
                             headers={"X-Twilio-Signature": twilio_signature(SIMULATOR_AUTH_TOKEN, url, params)})
    assert response.status_code == 200, response.text


def wait_until(stack, broker, done, what: str, *, timeout: float = 120.0) -> None:
    """Poll done() every 0.2 s, enqueueing both sweepers every 2 s as the scheduler would."""
    deadline, next_sweep = time.monotonic() + timeout, 0.0
    while not done():
        assert time.monotonic() < deadline, f"{what}:\n{stack.log('worker')[-4000:]}"
        if time.monotonic() > next_sweep:
            stack.enqueue(broker, "sweep")
            stack.enqueue(broker, "sweep_webhooks")
            next_sweep = time.monotonic() + 2
        time.sleep(0.2)


def test_a_receiver_gets_each_event_once_after_deduplication_through_failures_timeouts_and_a_killed_worker(
        stack, database, broker, receiver):
    # given an account with an endpoint at the receiver for inbound replies and deliveries
    account_id, headers, sender = new_account(stack, 8101, "100")
    response = requests.post(f"{stack.url}/v1/accounts/{account_id}/webhook-endpoints", headers=headers, timeout=10,
                             json={"url": receiver.url, "events": ["message.received", "message.delivered"]})
    assert response.status_code == 201, response.text
    endpoint = response.json()
    receiver.secret = endpoint["secret"]

    # when the account sends a text and its recipient replies
    sent = requests.post(f"{stack.url}/v1/messages", headers=headers, timeout=10,
                         json={"to": RECIPIENT, "from": sender, "body": "Open house Saturday at 10"})
    assert sent.status_code == 202, sent.text
    message_id = sent.json()["id"]
    inbound_reply(stack, sender, "Count me in")

    # and the receiver answers 500 twice, times out once, then holds a request while the worker is killed -9
    assert receiver.holding.wait(90), (receiver.requests, stack.log("worker")[-4000:])
    stack.kill_worker()
    stack.start_worker()

    # then, after retries and the sweeper, the receiver has each event exactly once, every request verified
    def both_events_kept_and_logged() -> bool:
        with database.unit_of_work() as session:
            statuses = session.scalars(select(WebhookDelivery.status)
                                       .where(WebhookDelivery.endpoint_id == endpoint["id"])).all()
        return len(receiver.events) == 2 and sorted(statuses) == ["succeeded", "succeeded"]

    wait_until(stack, broker, both_events_kept_and_logged, f"events at the receiver: {receiver.requests}")
    with database.unit_of_work() as session:
        reply = session.scalars(select(Message).where(Message.account_id == account_id,
                                                      Message.direction == "inbound")).one()
    kept = {event["type"]: event for event in receiver.events.values()}
    assert set(kept) == {"message.delivered", "message.received"}
    assert kept["message.delivered"]["data"]["id"] == message_id
    assert kept["message.delivered"]["data"]["status"] == "delivered"
    assert kept["message.received"]["data"]["id"] == reply.id
    assert kept["message.received"]["data"]["body"] == "Count me in"
    assert receiver.unverified == 0
    # the receiver was asked more often than there are events: the same ids came again and were de-duplicated
    answers = [answer for _, answer in receiver.requests]
    assert answers[:4] == ["500", "500", "timeout", "hold"] and len(answers) > 4
    assert {event_id for event_id, _ in receiver.requests} == set(receiver.events)

    # and the delivery log shows the attempts it took, each delivery succeeded
    log = requests.get(f"{stack.url}/v1/accounts/{account_id}/webhook-endpoints/{endpoint['id']}/deliveries",
                       headers=headers, timeout=10).json()["data"]
    assert sorted(row["event_type"] for row in log) == ["message.delivered", "message.received"]
    assert all(row["status"] == "succeeded" for row in log)
    assert sum(row["attempts"] for row in log) >= len(answers)  # a killed attempt may not have reached it
