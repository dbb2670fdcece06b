"""The dramatiq broker on Redis, shared by the intake (enqueue only), the workers and the scheduler."""

import os
from uuid import uuid4

import dramatiq
from dramatiq.brokers.redis import RedisBroker
from dramatiq.common import current_millis, dq_name
from dramatiq.middleware import AgeLimit, Callbacks, Pipelines, Retries, ShutdownNotifications, TimeLimit

from shared.config import ConfigError

PIPELINE_BATCH = 1000  # messages per Redis round trip


def default_middleware() -> list:
    """Retries back off from 1 s to 5 min; a job running past 10 min is interrupted and retried."""
    return [
        AgeLimit(),
        TimeLimit(time_limit=600_000),
        ShutdownNotifications(),
        Callbacks(),
        Pipelines(),
        Retries(max_retries=20, min_backoff=1_000, max_backoff=300_000),
    ]


def make_broker(redis_url: str | None = None, *, client=None) -> RedisBroker:
    """A RedisBroker on a URL (real Redis) or an existing client (fakeredis in unit tests), made global."""
    broker = RedisBroker(url=redis_url, client=client, middleware=default_middleware())
    dramatiq.set_broker(broker)
    return broker


def broker_from_environment() -> dramatiq.Broker:
    """The broker a process entry point already installed, else one on REDIS_URL.

    `creditq worker|web|scheduler` export REDIS_URL (starting the embedded server when needed)
    before anything imports the actors, so every process, parent or forked, finds the same Redis.
    """
    from dramatiq import broker as global_state

    if global_state.global_broker is not None:
        return global_state.global_broker
    url = os.environ.get("REDIS_URL")
    if not url:
        raise ConfigError("REDIS_URL is not set: start processes with `creditq worker|web|scheduler` or set it")
    return make_broker(url)


def enqueue_many(actor: dramatiq.Actor, args_list: list[tuple], *, delays: list[int | None] | None = None) -> None:
    """`actor.send_with_options(args=args, delay=delay)` for each args, in Redis pipelines of PIPELINE_BATCH:
    one round trip per batch.

    Runs the RedisBroker's own enqueue (message copy with a fresh redis_message_id, the delay queue and
    eta of a delayed one, middleware hooks, the dispatch script) so the messages are indistinguishable
    from `actor.send`'s. Other brokers (the StubBroker) enqueue one by one.
    """
    delays = delays or [None] * len(args_list)
    broker = actor.broker
    if not isinstance(broker, RedisBroker):
        for args, delay in zip(args_list, delays):
            actor.send_with_options(args=args, delay=delay)
        return
    dispatch = broker.scripts["dispatch"]
    for start in range(0, len(args_list), PIPELINE_BATCH):
        pipeline = broker.client.pipeline(transaction=False)
        sent = []
        for args, delay in zip(args_list[start:start + PIPELINE_BATCH], delays[start:start + PIPELINE_BATCH]):
            message = actor.message(*args).copy(options={"redis_message_id": str(uuid4())})
            if delay is not None:
                message = message.copy(queue_name=dq_name(message.queue_name),
                                       options={"eta": current_millis() + delay})
            broker.emit_before("enqueue", message, delay)
            dispatch(keys=[broker.namespace], client=pipeline, args=[
                "enqueue", current_millis(), message.queue_name, broker.broker_id, broker.heartbeat_timeout,
                broker.dead_message_ttl, broker._should_do_maintenance("enqueue"), broker._max_unpack_size(),
                message.options["redis_message_id"], message.encode()])
            sent.append((message, delay))
        pipeline.execute()
        for message, delay in sent:
            broker.emit_after("enqueue", message, delay)
