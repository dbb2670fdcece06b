"""Campaign actors: start a step, fan out its chunks, start drip steps when their day comes.

Every job is idempotent: a step is claimed once, a chunk is keyed by (campaign, step, chunk), and
a replay only enqueues again what may be missing (the send step ignores a message already sent).
"""

import logging
from datetime import UTC, datetime
from uuid import uuid4

import dramatiq
from dramatiq.brokers.redis import RedisBroker
from dramatiq.common import current_millis

from shared.fan_out import due_steps, fan_out_chunk as make_chunk, start_step

from . import resources
from .sending import send_message

log = logging.getLogger(__name__)

PIPELINE_BATCH = 1000  # messages per Redis round trip


@dramatiq.actor(queue_name="campaigns", max_retries=20)
def fan_out_campaign(campaign_id: str, step: int = 0) -> None:
    """Claim the step and enqueue one job per chunk, so chunks fan out in parallel across workers."""
    r = resources.current()
    with r.database.unit_of_work() as session:
        started = start_step(session, campaign_id, step, now=datetime.now(UTC))
    if started is not None:
        enqueue_many(fan_out_chunk, [(campaign_id, step, chunk) for chunk in range(started.chunks)])


@dramatiq.actor(queue_name="campaigns", max_retries=20)
def fan_out_chunk(campaign_id: str, step: int, chunk: int) -> None:
    r = resources.current()
    with r.database.unit_of_work() as session:
        ids = make_chunk(session, campaign_id, step, chunk, rate_card=r.rate_card,
                         hold_ttl_seconds=r.hold_ttl_seconds, now=datetime.now(UTC))
    enqueue_many(send_message, [(message_id,) for message_id in ids])  # lost if we die here: the sweeper's job


@dramatiq.actor(queue_name="campaigns", max_retries=0)
def start_due_campaign_steps() -> None:
    """Run by the scheduler: first steps sent later (send_at) and drip steps whose day has come."""
    r = resources.current()
    with r.database.unit_of_work() as session:
        due = due_steps(session, datetime.now(UTC))
    enqueue_many(fan_out_campaign, due)
    if due:
        log.info("campaigns: %d steps due", len(due))


def enqueue_many(actor: dramatiq.Actor, args_list: list[tuple]) -> None:
    """`actor.send(*args)` for each args, in Redis pipelines of PIPELINE_BATCH: one round trip per batch.

    Runs the RedisBroker's own enqueue (message copy with a fresh redis_message_id, middleware
    hooks, the dispatch script) so the messages are indistinguishable from `actor.send`'s.
    Other brokers (the StubBroker) enqueue one by one.
    """
    broker = actor.broker
    if not isinstance(broker, RedisBroker):
        for args in args_list:
            actor.send(*args)
        return
    dispatch = broker.scripts["dispatch"]
    for start in range(0, len(args_list), PIPELINE_BATCH):
        pipeline = broker.client.pipeline(transaction=False)
        sent = []
        for args in args_list[start:start + PIPELINE_BATCH]:
            message = actor.message(*args).copy(options={"redis_message_id": str(uuid4())})
            broker.emit_before("enqueue", message, None)
            dispatch(keys=[broker.namespace], client=pipeline, args=[
                "enqueue", current_millis(), message.queue_name, broker.broker_id, broker.heartbeat_timeout,
                broker.dead_message_ttl, broker._should_do_maintenance("enqueue"), broker._max_unpack_size(),
                message.options["redis_message_id"], message.encode()])
            sent.append(message)
        pipeline.execute()
        for message in sent:
            broker.emit_after("enqueue", message, None)
