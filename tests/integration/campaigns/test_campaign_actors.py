"""The campaign actors on dramatiq's RedisBroker (fakeredis) with a real dramatiq Worker."""

from datetime import timedelta

import dramatiq
import fakeredis
import pytest
from sqlalchemy import func, select

from shared.messaging.messages import in_campaigns
from shared.messaging.sender_throttle import SenderThrottle
from shared.models import Message
from tests.integration.campaigns.test_campaigns import ANN, BO, create, fan_out_step
from tests.integration.messaging.test_send_pipeline import CARD, FAST, accept, gateways, make_account  # noqa: F401
from tests.twilio_sim_fixtures import (  # noqa: F401
    _callback_receiver_server,
    _simulator_server,
    background_loop,
    callback_receiver,
    simulator,
)


@pytest.fixture
def campaign_workers(sqlite_database, gateways, fake_broker):  # noqa: F811
    import workers
    from workers import resources

    resources.use(resources.Resources(
        database=sqlite_database, gateway_for=gateways, throttle=SenderThrottle(fakeredis.FakeRedis(), FAST),
        hold_ttl_seconds=900, stale_after=timedelta(seconds=60)))
    yield workers
    resources.use(None)


def test_bulk_enqueue_writes_the_messages_actor_send_would(campaign_workers, fake_broker):
    actor = campaign_workers.sending.send_message
    campaign_workers.campaigns.enqueue_many(actor, [("msg_a",), ("msg_b",)])
    actor.send("msg_c")
    consumer = fake_broker.consume("send", prefetch=3, timeout=100)
    received = [message for _, message in zip(range(3), filter(None, consumer))]
    assert [m.args for m in received] == [("msg_a",), ("msg_b",), ("msg_c",)]
    shapes = {(m.queue_name, m.actor_name, tuple(sorted(m.options))) for m in received}
    assert len(shapes) == 1  # indistinguishable from actor.send's


def test_the_fan_out_actors_turn_a_campaign_into_sent_messages(sqlite_database, campaign_workers, fake_broker,
                                                               simulator):  # noqa: F811
    account_id = make_account(sqlite_database, 100)
    campaign_id, _ = create(sqlite_database, account_id, quiet_hours={"start": "00:00", "end": "00:00"})  # any clock
    worker = dramatiq.Worker(fake_broker, worker_timeout=100)
    worker.start()
    try:
        for _ in range(2):  # at-least-once: the start twice
            campaign_workers.campaigns.fan_out_campaign.send(campaign_id, 0)
        fake_broker.join("campaigns", timeout=30_000)
        fake_broker.join("send_bulk", timeout=30_000)
    finally:
        worker.stop()
    with sqlite_database.unit_of_work() as session:
        assert session.scalar(select(func.count()).select_from(Message).where(
            Message.campaign_id == campaign_id, Message.twilio_sid.is_not(None))) == 2
    assert sorted(m["to"] for m in simulator.sent()["messages"]) == [ANN, BO]


def queued(fake_broker, queue_name: str) -> list[tuple]:
    """The args of every job waiting on the queue, taken off it."""
    consumer = fake_broker.consume(queue_name, prefetch=100, timeout=100)
    taken = []
    while (message := next(consumer)) is not None:
        taken.append((message.actor_name, *message.args))
        consumer.ack(message)
    return taken


def test_a_campaigns_texts_queue_apart_from_single_texts_whoever_enqueues_them(sqlite_database, campaign_workers,
                                                                              fake_broker):
    # given a campaign's two texts, fanned out, and a single text, all waiting to be sent
    account_id = make_account(sqlite_database, 100)
    campaign_id, _ = create(sqlite_database, account_id, quiet_hours={"start": "00:00", "end": "00:00"})
    in_campaign = fan_out_step(sqlite_database, campaign_id)
    single = accept(sqlite_database, account_id)

    # when the fan-out enqueues the campaign's, and a sweep enqueues all three (their jobs lost)
    campaign_workers.campaigns.enqueue_many(campaign_workers.sending.send_campaign_message,
                                            [(message_id,) for message_id in in_campaign])
    with sqlite_database.read_only() as session:
        bulk = in_campaigns(session, [*in_campaign, single])
    campaign_workers.sending.enqueue_sends([*in_campaign, single], bulk)

    # then the campaign's wait on their own queue, for their own actor, which a worker takes after single texts
    bulk = campaign_workers.sending.send_campaign_message
    assert sorted(queued(fake_broker, "send_bulk")) == sorted(2 * [(bulk.actor_name, m) for m in in_campaign])
    assert queued(fake_broker, "send") == [("send_message", single)]
    assert bulk.priority > campaign_workers.sending.send_message.priority
