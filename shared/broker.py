"""The dramatiq broker, shared by the intake (enqueue only), the workers and the scheduler: Redis by default, or
RabbitMQ (CREDITQ_BROKER=rabbitmq, AMQP_URL) where one already runs. Redis is needed either way: the sender
throttles, the scheduler lease and the rate limits live there."""

import logging
import os
from uuid import uuid4

import dramatiq
import redis
from dramatiq.brokers.rabbitmq import RabbitmqBroker
from dramatiq.brokers.redis import RedisBroker
from dramatiq.common import current_millis, dq_name
from dramatiq.middleware import AgeLimit, Callbacks, Pipelines, Retries, ShutdownNotifications, TimeLimit

from shared.config import ConfigError, broker_choice
from shared.redis_clock import RedisClock, RedisClockEtas

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


class RabbitmqBesideRedis(RabbitmqBroker):
    """dramatiq's RabbitmqBroker, knowing the Redis that throttles, leases and rate limits use beside it."""

    def __init__(self, *, redis_url: str, **kwargs):
        super().__init__(**kwargs)
        self.redis_url = redis_url
        # pika logs each connection and channel it opens (one per thread) at INFO: five lines, nothing to act on
        logging.getLogger("pika").setLevel(logging.WARNING)


class RedisClockBroker(RedisBroker):
    """dramatiq's RedisBroker stamping each call with Redis's clock, not this process's: the heartbeats that tell a
    live worker from a dead one are then compared on one timeline, so a worker whose clock is behind is not
    declared dead (and its jobs handed out again) by one whose clock is ahead."""

    def __init__(self, *, clock: RedisClock | None = None, **kwargs):
        super().__init__(**kwargs)
        self.clock = clock or RedisClock(self.client)

    def _dispatch(self, command):
        """RedisBroker._dispatch with the timestamp from `self.clock` (dramatiq passes time.time's)."""
        dispatch, keys = self.scripts["dispatch"], [self.namespace]

        def do_dispatch(queue_name, *args):
            return dispatch(keys=keys, args=[
                command, self.clock.millis(), queue_name, self.broker_id, self.heartbeat_timeout,
                self.dead_message_ttl, self._should_do_maintenance(command), self._max_unpack_size(), *args])

        return do_dispatch


def make_broker(redis_url: str | None = None, *, client=None, amqp_url: str | None = None,
                install: bool = True) -> dramatiq.Broker:
    """A RabbitmqBroker on `amqp_url` (beside the Redis on `redis_url`), else a RedisBroker on a URL (real Redis) or
    an existing client (fakeredis in unit tests); made the global broker unless `install` is false (a client that
    only enqueues, in a test).

    RabbitMQ confirms each publish, so an enqueue that returns is on the server (an unconfirmed one could vanish
    with its connection, leaving the message to wait for the sweeper).
    """
    if amqp_url is not None:
        clock = RedisClock(redis.Redis.from_url(redis_url))
        broker = RabbitmqBesideRedis(url=amqp_url, redis_url=redis_url, confirm_delivery=True,
                                     middleware=[*default_middleware(), RedisClockEtas(clock)])
    else:
        client = client or redis.Redis(connection_pool=redis.ConnectionPool.from_url(redis_url))
        clock = RedisClock(client)
        broker = RedisClockBroker(client=client, clock=clock, middleware=[*default_middleware(), RedisClockEtas(clock)])
    if install:
        dramatiq.set_broker(broker)
    return broker


def broker_for(environ, *, install: bool = True) -> dramatiq.Broker:
    """The broker CREDITQ_BROKER names: RabbitMQ on AMQP_URL, or Redis on REDIS_URL (required either way)."""
    redis_url = environ.get("REDIS_URL")
    if not redis_url:
        raise ConfigError("REDIS_URL is not set: start processes with `creditq worker|web|scheduler` or set it")
    _, amqp_url = broker_choice(environ)
    return make_broker(redis_url, amqp_url=amqp_url, install=install)


def broker_from_environment() -> dramatiq.Broker:
    """The broker a process entry point already installed, else the one the environment names (`broker_for`).

    `creditq worker|web|scheduler` export REDIS_URL (starting the embedded server when needed)
    before anything imports the actors, so every process, parent or forked, finds the same Redis and broker.
    """
    from dramatiq import broker as global_state

    if global_state.global_broker is not None:
        return global_state.global_broker
    return broker_for(os.environ)


def redis_beside(broker: dramatiq.Broker) -> redis.Redis:
    """The Redis that throttles, leases and rate limits use: the broker's own client when it queues on Redis (the
    same server, or a test's fakeredis), else a client on the REDIS_URL the RabbitMQ broker was made with."""
    if isinstance(broker, RedisBroker):
        return broker.client
    return redis.Redis.from_url(broker.redis_url)


def enqueue_many(actor: dramatiq.Actor, args_list: list[tuple], *, delays: list[int | None] | None = None) -> None:
    """`actor.send_with_options(args=args, delay=delay)` for each args, in Redis pipelines of PIPELINE_BATCH:
    one round trip per batch.

    Runs the RedisBroker's own enqueue (message copy with a fresh redis_message_id, the delay queue and
    eta of a delayed one, middleware hooks, the dispatch script) so the messages are indistinguishable
    from `actor.send`'s. Other brokers enqueue one by one: dramatiq's RabbitmqBroker has no batch publish (each
    publish waits for its confirm), and the StubBroker's enqueue is in memory.
    """
    delays = delays or [None] * len(args_list)
    broker = actor.broker
    if not isinstance(broker, RedisClockBroker):
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
                "enqueue", broker.clock.millis(), message.queue_name, broker.broker_id, broker.heartbeat_timeout,
                broker.dead_message_ttl, broker._should_do_maintenance("enqueue"), broker._max_unpack_size(),
                message.options["redis_message_id"], message.encode()])
            sent.append((message, delay))
        pipeline.execute()
        for message, delay in sent:
            broker.emit_after("enqueue", message, delay)
