"""The thin actors on dramatiq's RedisBroker (fakeredis) with a real dramatiq Worker."""

import time
from datetime import timedelta

import dramatiq
import fakeredis
import pytest

from shared.messaging.sender_throttle import SenderThrottle
from tests.integration.messaging.test_send_pipeline import (  # noqa: F401
    CARD,
    FAST,
    accept,
    account,
    gateways,
    make_account,
    message,
    report,
    throttle,
)
from tests.twilio_sim_fixtures import (  # noqa: F401
    _callback_receiver_server,
    _simulator_server,
    background_loop,
    callback_receiver,
    simulator,
)


@pytest.fixture
def worker_resources(sqlite_database, gateways, fake_broker):  # noqa: F811
    import workers
    from workers import resources

    resources.use(resources.Resources(
        database=sqlite_database, gateway_for=gateways, throttle=SenderThrottle(fakeredis.FakeRedis(), FAST),
        hold_ttl_seconds=900, stale_after=timedelta(seconds=60)))
    worker = dramatiq.Worker(fake_broker, worker_timeout=100)
    worker.start()
    yield workers
    worker.stop()
    resources.use(None)


def test_send_and_settle_actors_take_a_message_to_charged(sqlite_database, worker_resources, fake_broker,
                                                           simulator):  # noqa: F811
    account_id = make_account(sqlite_database, 10)
    message_id = accept(sqlite_database, account_id)
    for _ in range(2):  # at-least-once delivery: the job twice
        worker_resources.sending.send_message.send(message_id)
    fake_broker.join("send")
    assert message(sqlite_database, message_id).status == "queued"
    assert len(simulator.sent()["messages"]) == 1
    report(sqlite_database, message_id, "delivered", segments=2)
    for _ in range(2):
        worker_resources.settling.settle_message.send(message_id)
    fake_broker.join("settle")
    assert message(sqlite_database, message_id).credits_charged == 2000
    assert account(sqlite_database, account_id).balance == 8000


def test_a_429_is_retried_by_the_broker_until_twilio_takes_it(sqlite_database, worker_resources, fake_broker,
                                                               simulator):  # noqa: F811
    account_id = make_account(sqlite_database, 10)
    message_id = accept(sqlite_database, account_id)
    simulator.configure(rate_429=1.0, retry_after_s=0)
    worker_resources.sending.send_message.send(message_id)
    deadline = time.monotonic() + 10
    while not simulator.faults().get("429") and time.monotonic() < deadline:
        time.sleep(0.01)
    simulator.configure(rate_429=0.0)  # the first attempt was refused; the broker's retry gets through
    fake_broker.join("send", timeout=30_000)
    stored = message(sqlite_database, message_id)
    assert (stored.status, stored.attempts) == ("queued", 2)


def test_the_sweep_actor_enqueues_a_lost_send(sqlite_database, worker_resources, fake_broker):
    from workers import resources

    account_id = make_account(sqlite_database, 10)
    message_id = accept(sqlite_database, account_id)
    resources.current().stale_after = timedelta(seconds=0)
    worker_resources.sweeping.sweep.send()
    fake_broker.join("default")
    fake_broker.join("send")
    assert message(sqlite_database, message_id).status == "queued"
