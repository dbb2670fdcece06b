"""Redis lost over the real processes (web, worker, scheduler, Twilio simulator, PostgreSQL): restarted empty with
jobs of every kind queued in it, and away while clients keep posting.

Redis holds no fact of its own: every job re-derives from the database. So the test never enqueues a sweep itself;
the module's scheduler runs its safety nets every 2 s (CREDITQ_SWEEP_INTERVAL_SECONDS) and counts a job waiting 3 s
as lost (CREDITQ_SWEEP_STALE_SECONDS). Each test ends with `creditq ledger verify` clean, and each message and call
sent once and charged once, against the simulator's own log.
"""

import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
import requests
from sqlalchemy import func, select, update

from shared.billing import dunning
from shared.billing.calendar import period_of
from shared.campaigns import fan_out
from shared.config import SIMULATOR_ACCOUNT_SID, SIMULATOR_AUTH_TOKEN
from shared.models import Account, BillingRun, Call, Campaign, DunningRun, DunningStep, Message, WebhookEvent
from tests.e2e.test_send_pipeline_e2e import all_final, check_money, ledger_verify, new_account, simulated
from tests.e2e.test_webhook_events_e2e import Receiver
from tests.support.stack import Stack
from twilio_sim.signature import twilio_signature

pytestmark = pytest.mark.e2e

RECIPIENT = "+14155550100"
NO_QUIET_HOURS = {"start": "00:00", "end": "00:00"}


@pytest.fixture(scope="module")
def stack(postgres_server, tmp_path_factory):
    env = {
        "CREDITQ_SWEEP_INTERVAL_SECONDS": "2",
        "CREDITQ_SWEEP_STALE_SECONDS": "3",
        "CREDITQ_HOLD_TTL_SECONDS": "30",
        "CREDITQ_SENDER_RATES": "long_code=1000,toll_free=1000,short_code=1000",
        "CREDITQ_WEBHOOK_TIMEOUT_SECONDS": "2",
        "CREDITQ_WEBHOOK_RETRY_BASE_SECONDS": "0.2",
        "CREDITQ_WEBHOOK_RETRY_MAX_SECONDS": "1",
        "TWILIO_SIM_CALLBACK_DELAY_MS": "50",
        "TWILIO_SIM_CALL_MINUTE_MS": "30",
        "TWILIO_SIM_RING_SECONDS": "1",
    }
    with Stack(postgres_server, tmp_path_factory.mktemp("redis-faults"), database_name="e2e_redis_faults", env=env,
               worker_processes=1, worker_threads=8) as running:
        running.start_scheduler()
        yield running


@pytest.fixture
def receiver():
    started = Receiver([])
    yield started
    started.stop()


def wait_for(stack, what: str, done: Callable[[], bool], *, timeout: float = 150.0) -> None:
    """Poll a stored fact; only the processes (the scheduler's safety nets among them) move anything."""
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline:
            logs = stack.logs()
            pytest.fail(f"{what}: not done after {timeout:.0f}s\n--- worker\n{logs['worker'][-3000:]}"
                        f"\n--- scheduler\n{logs['scheduler'][-2000:]}")
        time.sleep(0.5)


def post(stack, path: str, headers: dict, body: dict) -> requests.Response:
    return requests.post(f"{stack.url}{path}", headers=headers, json=body, timeout=30)


def accepted(response: requests.Response) -> dict:
    """What the intake stored: a 202 (a 503 would need a Retry-After and nothing stored; none is expected here)."""
    assert response.status_code == 202, (response.status_code, response.text)
    return response.json()


def send_texts(stack, headers: dict, sender: str, label: str, count: int) -> list[str]:
    return [accepted(post(stack, "/v1/messages", headers, {"to": RECIPIENT, "from": sender,
                                                           "body": f"{label} {i}"}))["id"] for i in range(count)]


def start_campaign(stack, headers: dict, sender: str, label: str, recipients: int) -> str:
    return accepted(post(stack, "/v1/campaigns", headers, {
        "name": label, "from": sender, "body": label + " for {{ name }}", "quiet_hours": NO_QUIET_HOURS,
        "recipients": [{"to": f"+1415777{n:04d}", "fields": {"name": f"{label}-{n}"}} for n in range(recipients)]}
    ))["id"]


def inbound_reply(stack, to: str, body: str) -> None:
    """A text from the recipient to the account's number, as Twilio delivers it (signed)."""
    sid = "SM" + uuid.uuid4().hex
    params = {"MessageSid": sid, "SmsSid": sid, "AccountSid": SIMULATOR_ACCOUNT_SID, "From": RECIPIENT, "To": to,
              "Body": body, "NumSegments": "1", "NumMedia": "0", "ApiVersion": "2010-04-01"}
    url = f"{stack.url}/webhooks/twilio/inbound"
    response = requests.post(url, data=params, timeout=10,
                             headers={"X-Twilio-Signature": twilio_signature(SIMULATOR_AUTH_TOKEN, url, params)})
    assert response.status_code == 200, response.text


def subscribe(stack, account_id: str, headers: dict, receiver: Receiver) -> None:
    response = requests.post(f"{stack.url}/v1/accounts/{account_id}/webhook-endpoints", headers=headers, timeout=10,
                             json={"url": receiver.url, "events": ["message.received"]})
    assert response.status_code == 201, response.text
    receiver.secret = response.json()["secret"]


def place_calls(stack, headers: dict, number: str, label: str) -> tuple[str, str]:
    """One call and a broadcast to three numbers: (the call's id, the broadcast's id)."""
    call = accepted(post(stack, "/v1/calls", headers, {"to": "+14155550180", "from": number, "say": label}))
    broadcast = accepted(post(stack, "/v1/voice-broadcasts", headers, {
        "name": label, "from": number, "say": label, "quiet_hours": NO_QUIET_HOURS,
        "recipients": [{"to": f"+1415778{n:04d}"} for n in range(3)]}))
    return call["id"], broadcast["id"]


def messages_of(database, message_ids: list[str], campaign_ids: list[str]) -> dict[str, Message]:
    with database.unit_of_work() as session:
        return {m.id: m for m in session.scalars(select(Message).where(
            Message.id.in_(message_ids) | Message.campaign_id.in_(campaign_ids)))}


def campaign_recipients(database, campaign_ids: list[str]) -> int:
    with database.unit_of_work() as session:
        return session.scalar(select(func.coalesce(func.sum(Campaign.recipients), 0))
                              .where(Campaign.id.in_(campaign_ids)))


def calls_of(database, account_id: str) -> list[Call]:
    with database.unit_of_work() as session:
        return list(session.scalars(select(Call).where(Call.account_id == account_id)))


def wait_for_texts(stack, database, message_ids: list[str], campaign_ids: list[str]) -> dict[str, Message]:
    expected = len(message_ids) + campaign_recipients(database, campaign_ids)

    def done() -> bool:
        messages = messages_of(database, message_ids, campaign_ids)
        return len(messages) == expected and all_final(messages.values())

    wait_for(stack, "every accepted text sent and settled", done)
    return messages_of(database, message_ids, campaign_ids)


def check_calls(stack, database, account_id: str, count: int, starting_balance: int) -> None:
    """Each call placed once at Twilio and charged once; the account paid exactly what its calls were charged."""
    wait_for(stack, "every call placed and settled", lambda: len(calls := calls_of(database, account_id)) == count
             and all(c.credits_charged is not None for c in calls))
    calls = calls_of(database, account_id)
    twilio = requests.get(f"{stack.simulator_url}/_sim/calls", timeout=30).json()
    assert twilio["duplicates"] == []
    placed = {c["sid"] for c in twilio["calls"]}
    assert all(call.twilio_sid in placed for call in calls), [
        (call.id, call.status, call.error_message) for call in calls]
    with database.unit_of_work() as session:
        account = session.get(Account, account_id)
        assert (starting_balance - account.balance, account.held) == (sum(c.credits_charged for c in calls), 0)


def jobs_in_redis(broker) -> set[bytes]:
    """The ids of every job Redis holds, in any queue, due or delayed."""
    return {job_id for key in broker.client.keys("dramatiq:*.msgs") for job_id in broker.client.hkeys(key)}


def test_a_redis_restarted_empty_loses_none_of_the_jobs_it_held(stack, database, broker, sim, receiver):
    # Given no worker taking jobs, so every job below waits in Redis: texts, a scheduled text, a campaign not fanned
    # out, a campaign whose step was claimed and its chunk job queued, a call, a voice broadcast, an inbound reply's
    # webhook event, a dunning step and a month-end due for an account opened ten weeks ago
    stack.kill_worker()
    account_id, headers, sender = new_account(stack, 9100, "1000")
    quiet = requests.patch(f"{stack.url}/v1/accounts/{account_id}", headers=headers, timeout=10,
                           json={"quiet_hours": NO_QUIET_HOURS})
    assert quiet.status_code == 200, quiet.text
    subscribe(stack, account_id, headers, receiver)
    texts = send_texts(stack, headers, sender, "before the restart", 20)
    soon = (datetime.now(UTC) + timedelta(seconds=2)).isoformat()
    scheduled = accepted(post(stack, "/v1/messages", headers, {"to": RECIPIENT, "from": sender,
                                                                "body": "scheduled before the restart",
                                                                "send_at": soon}))
    assert scheduled["status"] == "scheduled"
    unstarted = start_campaign(stack, headers, sender, "Unstarted", 12)
    claimed = start_campaign(stack, headers, sender, "Claimed", 12)
    with database.unit_of_work() as session:  # as the fan-out job does, before Redis loses its chunk's job
        assert fan_out.start_step(session, claimed, 0, now=datetime.now(UTC)).missing == (0,)
    stack.enqueue(broker, "fan_out_chunk", claimed, 0, 0, queue_name="campaigns")
    inbound_reply(stack, sender, "a reply before the restart")
    voice_id, voice_headers, number = new_account(stack, 9101, "1000")
    call_id, broadcast_id = place_calls(stack, voice_headers, number, "before the restart")
    billed_id, _, _ = new_account(stack, 9102, "10")
    with database.unit_of_work() as session:
        session.execute(update(Account).where(Account.id == billed_id)
                        .values(created_at=datetime.now(UTC) - timedelta(weeks=10)))
        run_id = dunning.start_dunning(session, billed_id, reason="month_end", amount_cents=500,
                                       reference="redis-faults", now=datetime.now(UTC)).id
    last_month = str(period_of(datetime.now(UTC), "UTC").shift(-1))
    stack.enqueue(broker, "run_month_end", last_month, [billed_id], queue_name="billing")  # as the billing tick does
    stack.enqueue(broker, "run_dunning_step", run_id, 0, queue_name="payments")  # as the dunning tick does
    held = jobs_in_redis(broker)
    assert held

    # When Redis restarts empty (no persistence) and the worker comes back
    stack.stop_redis()
    stack.start_redis()
    assert not held & jobs_in_redis(broker)  # the scheduler's ticks may already have queued new ones
    stack.start_worker()

    # Then the scheduler takes its lease again and its safety nets re-drive every kind of job from the database:
    # each text and campaign message is sent once and charged once
    messages = wait_for_texts(stack, database, [*texts, scheduled["id"]], [unstarted, claimed])
    check_money(database, stack, messages, {account_id: 1_000_000})
    assert len([m for m in simulated(stack)["messages"] if m["from"] == sender]) == 20 + 1 + 12 + 12
    # the calls are placed once and charged once
    check_calls(stack, database, voice_id, 4, 1_000_000)
    calls = calls_of(database, voice_id)
    assert [c.id for c in calls if c.broadcast_id is None] == [call_id]
    assert len([c for c in calls if c.broadcast_id == broadcast_id]) == 3
    # the reply's event reaches the receiver
    wait_for(stack, "the inbound reply's event delivered", lambda: len(receiver.events) == 1)
    assert [e["type"] for e in receiver.events.values()] == ["message.received"]
    # the dunning step runs once and the run moves on; the month-end closes the account's last month
    wait_for(stack, "the dunning step run", lambda: database_value(
        database, select(DunningRun.next_step).where(DunningRun.id == run_id)) == 1)
    with database.unit_of_work() as session:
        steps = session.scalars(select(DunningStep).where(DunningStep.run_id == run_id)).all()
        assert [(s.step, s.finished_at is not None) for s in steps] == [(0, True)]
    wait_for(stack, "the month-end closed", lambda: database_value(database, select(func.count()).select_from(
        BillingRun).where(BillingRun.account_id == billed_id, BillingRun.period == last_month,
                          BillingRun.step == "close")) == 1)
    verify = ledger_verify(stack)
    assert verify.returncode == 0, verify.stdout + verify.stderr


def test_while_redis_is_away_the_intake_answers_202_for_what_it_stored_and_sends_it_once_redis_is_back(
        stack, database, sim, receiver):
    # Given an account with an endpoint for inbound replies, and a voice account, while every process runs
    account_id, headers, sender = new_account(stack, 9200, "1000")
    subscribe(stack, account_id, headers, receiver)
    voice_id, voice_headers, number = new_account(stack, 9201, "1000")

    # When Redis goes away
    stack.stop_redis()
    ready = requests.get(f"{stack.url}/healthz", timeout=30)
    assert ready.status_code == 503 and ready.headers["Content-Type"].startswith("application/problem+json")
    # Then the intake still stores and answers 202 for texts (one retried with its Idempotency-Key), a campaign,
    # a call and a voice broadcast, and takes an inbound reply: none is answered 503 after it was stored
    texts = send_texts(stack, headers, sender, "while Redis is away", 10)
    keyed = {**headers, "Idempotency-Key": "retried-while-redis-is-away"}
    first = accepted(post(stack, "/v1/messages", keyed, {"to": RECIPIENT, "from": sender, "body": "retried once"}))
    again = post(stack, "/v1/messages", keyed, {"to": RECIPIENT, "from": sender, "body": "retried once"})
    assert (again.status_code, again.json()["id"], again.headers.get("Idempotent-Replayed")) == (
        202, first["id"], "true")
    campaign_id = start_campaign(stack, headers, sender, "Away", 8)
    place_calls(stack, voice_headers, number, "while Redis is away")
    inbound_reply(stack, sender, "a reply while Redis is away")
    with database.unit_of_work() as session:
        assert session.scalar(select(func.count()).select_from(WebhookEvent).where(
            WebhookEvent.account_id == account_id, WebhookEvent.dispatched_at.is_(None))) == 1

    # When Redis comes back empty, once the scheduler found it away (it stands by instead of exiting)
    wait_for(stack, "the scheduler finding Redis away",
             lambda: "scheduler lease: Redis did not answer" in stack.log("scheduler"))
    stack.start_redis()

    # Then every stored text goes out once and is charged once, the calls too, and the reply's event is delivered
    messages = wait_for_texts(stack, database, [*texts, first["id"]], [campaign_id])
    check_money(database, stack, messages, {account_id: 1_000_000})
    assert len([m for m in simulated(stack)["messages"] if m["from"] == sender]) == 10 + 1 + 8
    check_calls(stack, database, voice_id, 4, 1_000_000)
    wait_for(stack, "the inbound reply's event delivered", lambda: len(receiver.events) == 1)
    verify = ledger_verify(stack)
    assert verify.returncode == 0, verify.stdout + verify.stderr


def test_a_redis_restarted_empty_while_texts_are_in_flight_sends_and_charges_each_once(stack, database, sim):
    # Given texts on their way through the worker: some at Twilio, some being sent, some still queued
    sim(duplicate_callback_rate=0.2)
    account_id, headers, sender = new_account(stack, 9300, "1000")
    texts = send_texts(stack, headers, sender, "in flight", 60)
    wait_for(stack, "some texts at Twilio", lambda: database_value(database, select(func.count()).select_from(
        Message).where(Message.id.in_(texts), Message.twilio_sid.is_not(None))) >= 5)

    # When Redis restarts empty in the middle of it: the queued send jobs, and the settle jobs, are gone
    stack.stop_redis()
    stack.start_redis()

    # Then every text still goes out once and is charged once
    messages = wait_for_texts(stack, database, texts, [])
    check_money(database, stack, messages, {account_id: 1_000_000})
    assert len([m for m in simulated(stack)["messages"] if m["from"] == sender]) == 60
    verify = ledger_verify(stack)
    assert verify.returncode == 0, verify.stdout + verify.stderr


def database_value(database, query):
    with database.unit_of_work() as session:
        return session.scalar(query)
