"""The jobs that close the send pipeline's gaps, on dramatiq's RedisBroker (fakeredis) with a real Worker:
early callbacks settle as the sid is stored, lost settlements are handed back, credits landing release
parked messages at once, and scheduled messages go out at their time without waiting for a sweep."""

import asyncio
import time
from datetime import UTC, datetime, timedelta

from intake.app import init_app
from shared.billing.payments import SimulatedGateway
from shared.billing.purchases import purchase
from shared.messaging.parking import park_account
from shared.messaging.quiet_hours import parse_window
from shared.messaging.send_policy import set_quiet_hours
from shared.models import Account
from shared.twilio.signatures import Credentials
from tests.integration.messaging.test_send_actors import worker_resources  # noqa: F401  (fixture)
from tests.integration.messaging.test_send_pipeline import (  # noqa: F401
    SENDER,
    accept,
    account,
    gateways,
    make_account,
    message,
    report,
)
from tests.support.callbacks import twilio_reports
from tests.twilio_sim_fixtures import (  # noqa: F401
    _callback_receiver_server,
    _simulator_server,
    background_loop,
    callback_receiver,
    simulator,
)

OPERATOR = {"Authorization": "Bearer test-operator-key-0123456789"}


def lock_with_parked_messages(database, account_id: str, count: int) -> list[str]:
    ids = [accept(database, account_id) for _ in range(count)]
    with database.unit_of_work() as session:
        session.get(Account, account_id).status = "locked"
        park_account(session, account_id, "locked for the test", now=datetime.now(UTC))
    return ids


def wait_for(check, timeout: float = 10.0):
    deadline = time.monotonic() + timeout
    while not (result := check()):
        assert time.monotonic() < deadline, "condition never held"
        time.sleep(0.02)
    return result


def test_a_callback_before_the_sid_is_stored_settles_the_message_promptly(sqlite_database, worker_resources,
                                                                          fake_broker, gateways,
                                                                          simulator):  # noqa: F811
    # given Twilio's delivered callback reaches us before the worker stores the sid (twice: a duplicate)
    from workers import resources

    def callback_first(*credentials):
        class Racing:
            def send(self, **fields):
                sent = gateways(*credentials).send(**fields)
                for _ in range(2):
                    twilio_reports(sqlite_database, Credentials(simulator.account_sid, simulator.auth_token), sent.sid,
                                   "delivered", num_segments=2)
                return sent

        return Racing()

    resources.current().gateway_for = callback_first
    account_id = make_account(sqlite_database, 10)
    message_id = accept(sqlite_database, account_id)

    # when the send job runs (twice: at-least-once delivery)
    for _ in range(2):
        worker_resources.sending.send_message.send(message_id)
    fake_broker.join("send")
    fake_broker.join("settle")

    # then it settled once with Twilio's segments, without waiting for reconciliation
    stored = message(sqlite_database, message_id)
    assert (stored.status, stored.credits_charged) == ("delivered", 2000)
    assert (account(sqlite_database, account_id).balance, account(sqlite_database, account_id).held) == (8000, 0)


def test_the_sweep_actor_settles_a_final_message_whose_settle_job_was_lost(sqlite_database, worker_resources,
                                                                           fake_broker):
    from workers import resources

    account_id = make_account(sqlite_database, 10)
    message_id = accept(sqlite_database, account_id)
    worker_resources.sending.send_message.send(message_id)
    fake_broker.join("send")
    report(sqlite_database, message_id, "delivered")  # and its settle job was never enqueued
    resources.current().stale_after = timedelta(seconds=0)

    worker_resources.sweeping.sweep.send()
    fake_broker.join("default")
    fake_broker.join("settle")

    assert message(sqlite_database, message_id).credits_charged == 1000


def test_a_purchase_that_unlocks_the_account_sends_its_parked_messages_at_once(sqlite_database, worker_resources,
                                                                             fake_broker, simulator):  # noqa: F811
    # given a locked account with parked messages
    account_id = make_account(sqlite_database, 10)
    parked = lock_with_parked_messages(sqlite_database, account_id, 2)

    # when credits are bought (the grant unlocks a locked account whose pool is >= 0)
    purchase(sqlite_database, SimulatedGateway(), account_id, 500_000, "pm_card_visa", idempotency_key="buy-1",
             now=datetime.now(UTC))
    fake_broker.join("default")
    fake_broker.join("send")

    # then its parked messages were released and sent, with no sweep
    assert account(sqlite_database, account_id).status == "active"
    assert [message(sqlite_database, m).status for m in parked] == ["queued", "queued"]
    assert len(simulator.sent()["messages"]) == 2


async def test_a_grant_through_the_api_releases_parked_messages_at_once(aiohttp_client, settings, sqlite_database,
                                                                       worker_resources, fake_broker,
                                                                       simulator):  # noqa: F811
    account_id = make_account(sqlite_database, 10)
    parked = lock_with_parked_messages(sqlite_database, account_id, 2)
    client = await aiohttp_client(init_app(settings, database=sqlite_database, broker=fake_broker))

    response = await client.post(f"/v1/accounts/{account_id}/grants", json={"credits": "5", "kind": "bonus"},
                                 headers=OPERATOR)

    assert response.status == 201
    await asyncio.to_thread(fake_broker.join, "default")
    await asyncio.to_thread(fake_broker.join, "send")
    assert [message(sqlite_database, m).status for m in parked] == ["queued", "queued"]


async def test_a_scheduled_message_goes_out_at_its_time_without_a_sweep(aiohttp_client, settings, sqlite_database,
                                                                       worker_resources, fake_broker):
    # given a message scheduled a second ahead, from an account without quiet hours (it may be night in San Francisco)
    account_id = make_account(sqlite_database, 10)
    with sqlite_database.unit_of_work() as session:
        set_quiet_hours(session, account_id, window=parse_window({"start": "00:00", "end": "00:00"}), scope=None)
    client = await aiohttp_client(init_app(settings, database=sqlite_database, broker=fake_broker))
    send_at = datetime.now(UTC) + timedelta(seconds=1)

    response = await client.post("/v1/messages", headers=OPERATOR, json={
        "account_id": account_id, "to": "+14155550100", "from": SENDER, "body": "open house",
        "send_at": send_at.isoformat()})

    # then it waits as scheduled, and its delayed job sends it once its time has come
    body = await response.json()
    assert (response.status, body["status"]) == (202, "scheduled")
    await asyncio.to_thread(wait_for, lambda: message(sqlite_database, body["id"]).status == "queued")
    assert datetime.now(UTC) >= send_at
