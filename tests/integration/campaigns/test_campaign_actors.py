"""The campaign actors on dramatiq's RedisBroker (fakeredis) with a real dramatiq Worker."""

from datetime import timedelta

import dramatiq
import fakeredis
import pytest
from sqlalchemy import func, select

from shared.campaigns.bulk_queues import BULK_QUEUES, bulk_actor_for
from shared.messaging.messages import in_campaigns
from shared.messaging.sender_throttle import SenderThrottle
from shared.models import Message
from tests.integration.campaigns.test_campaigns import ANN, BO, create, fan_out_step
from tests.integration.messaging.test_send_pipeline import (  # noqa: F401
    CARD,
    FAST,
    SENDER,
    accept,
    gateways,
    make_account,
)
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
        for queue_name in BULK_QUEUES:
            fake_broker.join(queue_name, timeout=30_000)
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
    campaign_workers.campaigns.enqueue_many(campaign_workers.sending.campaign_sender_for(account_id),
                                            [(message_id,) for message_id in in_campaign])
    with sqlite_database.read_only() as session:
        bulk = in_campaigns(session, [*in_campaign, single])
    campaign_workers.sending.enqueue_sends([*in_campaign, single], bulk)

    # then the campaign's wait on their account's queue, for its actor, which a worker takes after single texts
    sender = campaign_workers.sending.campaign_sender_for(account_id)
    assert sorted(queued(fake_broker, sender.queue_name)) == sorted(2 * [(sender.actor_name, m) for m in in_campaign])
    assert queued(fake_broker, "send") == [("send_message", single)]
    assert all(queued(fake_broker, queue_name) == [] for queue_name in BULK_QUEUES)
    assert sender.priority > campaign_workers.sending.send_message.priority


def account_on_another_queue(database, than: str) -> tuple[str, str]:
    """An account, and its sender, whose campaign texts go on another queue than account `than`'s."""
    for n in range(1, 100):
        sender = f"+1415555{n:04d}"
        account_id = make_account(database, 100, sender=sender)
        if bulk_actor_for(account_id) != bulk_actor_for(than):
            return account_id, sender
    raise AssertionError("no account's id hashed to another queue")


def test_two_accounts_campaigns_can_wait_on_queues_of_their_own(sqlite_database, campaign_workers, fake_broker):
    # given two accounts whose campaigns' texts go on different queues, each with a campaign fanned out
    first = make_account(sqlite_database, 100)
    second, second_sender = account_on_another_queue(sqlite_database, first)
    texts = {}
    for account_id, sender in ((first, SENDER), (second, second_sender)):
        campaign_id, _ = create(sqlite_database, account_id, sender=sender,
                                quiet_hours={"start": "00:00", "end": "00:00"})
        texts[account_id] = fan_out_step(sqlite_database, campaign_id)

    # when the sweeper finds them all waiting (their jobs lost) and enqueues them
    every_text = [*texts[first], *texts[second]]
    with sqlite_database.read_only() as session:
        campaign_workers.sending.enqueue_sends(every_text, in_campaigns(session, every_text))

    # then each account's texts wait on its own queue, so that neither waits behind the other's in a worker's hands
    for account_id in (first, second):
        sender = campaign_workers.sending.campaign_sender_for(account_id)
        assert sorted(queued(fake_broker, sender.queue_name)) == sorted((sender.actor_name, m)
                                                                        for m in texts[account_id])
