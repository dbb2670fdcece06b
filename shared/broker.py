"""The dramatiq broker, shared by the intake (enqueue only), the workers and the scheduler: Redis by default, or
RabbitMQ (CREDITQ_BROKER=rabbitmq, AMQP_URL) where one already runs. Redis is needed either way: the sender
throttles, the scheduler lease and the rate limits live there."""

import dataclasses
import logging
import os
import weakref
from uuid import uuid4

import dramatiq
import redis
from dramatiq.brokers.rabbitmq import RabbitmqBroker
from dramatiq.brokers.redis import RedisBroker
from dramatiq.common import current_millis, dq_name
from dramatiq.errors import DecodeError
from dramatiq.middleware import (
    AgeLimit,
    Callbacks,
    MiddlewareError,
    Pipelines,
    Retries,
    ShutdownNotifications,
    TimeLimit,
)

from shared import fast_json
from shared.config import ConfigError, broker_choice
from shared.redis_clock import RedisClock, RedisClockEtas

PIPELINE_BATCH = 1000  # messages per Redis round trip: 2,000 arguments to unpack, under Lua's stack of 8,000

# dramatiq's dispatch script's `enqueue` for the messages of one queue at once: each message's data in the queue's
# hash under its redis_message_id, the ids appended to the queue's list in order. ARGV: id, data, id, data, ...
_ENQUEUE_BATCH = """
local ids = {}
for i = 1, #ARGV, 2 do
    ids[#ids + 1] = ARGV[i]
end
redis.call("hset", KEYS[2], unpack(ARGV))
redis.call("rpush", KEYS[1], unpack(ids))
"""


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


# Queues whose jobs a person waits on (a text sent, a call placed, a campaign or a broadcast started: its fan-out job,
# then its chunks on every worker process): a consumer finding one empty polls again within PROMPT_POLL_MS.
# dramatiq's back-off, kept for the other queues (a settlement, a webhook, a billing job can start a second later),
# doubles its sleep up to the worker's timeout, 1 s: a text sent to a quiet system waited up to a second for its
# worker. The cost: about 35 more Redis calls a second a queue, with the worker idle (bench/pickup.py).
PROMPT_QUEUES = frozenset({"send", "calls", "campaigns", "broadcasts"})
PROMPT_POLL_MS = 100


class RedisClockBroker(RedisBroker):
    """dramatiq's RedisBroker stamping each call with Redis's clock, not this process's: the heartbeats that tell a
    live worker from a dead one are then compared on one timeline, so a worker whose clock is behind is not
    declared dead (and its jobs handed out again) by one whose clock is ahead. Its consumers of PROMPT_QUEUES poll
    an empty queue within PROMPT_POLL_MS."""

    def __init__(self, *, clock: RedisClock | None = None, **kwargs):
        super().__init__(**kwargs)
        self.clock = clock or RedisClock(self.client)
        self.scripts["enqueue_batch"] = self.client.register_script(_ENQUEUE_BATCH)
        _built.add(self)

    def _dispatch(self, command):
        """RedisBroker._dispatch with the timestamp from `self.clock` (dramatiq passes time.time's)."""
        dispatch, keys = self.scripts["dispatch"], [self.namespace]

        def do_dispatch(queue_name, *args):
            return dispatch(keys=keys, args=[
                command, self.clock.millis(), queue_name, self.broker_id, self.heartbeat_timeout,
                self.dead_message_ttl, self._should_do_maintenance(command), self._max_unpack_size(), *args])

        return do_dispatch

    def consume(self, queue_name: str, prefetch: int = 1, timeout: int = 5000):
        if queue_name in PROMPT_QUEUES:
            timeout = min(timeout, PROMPT_POLL_MS)
        return super().consume(queue_name, prefetch, timeout)


_built: "weakref.WeakSet[RedisClockBroker]" = weakref.WeakSet()


def _own_ids_after_fork() -> None:
    """A broker's id names its consumers' heartbeat and the jobs they fetched (dramatiq's dispatch script), and
    dramatiq draws it when the broker is built. `creditq worker` builds it before dramatiq forks the processes: each
    takes an id of its own, or one process's fetched jobs would live on its siblings' heartbeats, never handed out
    again while they beat."""
    for broker in _built:
        broker.broker_id = str(uuid4())


os.register_at_fork(after_in_child=_own_ids_after_fork)


class FastJSONEncoder(dramatiq.Encoder):
    """dramatiq's JSON messages, written and read by orjson (shared.fast_json: a tenth of the json module's time
    per message, which counts when a campaign enqueues 100,000 at once). The text is the same JSON either way, so
    processes that use dramatiq's own JSONEncoder read these messages and theirs are read here."""

    def encode(self, data: dict) -> bytes:
        return fast_json.dumps(data)

    def decode(self, data: bytes) -> dict:
        try:
            return fast_json.loads(data)
        except ValueError as error:  # not UTF-8, or not JSON: what dramatiq's JSONEncoder raises
            raise DecodeError(f"failed to decode message {data!r}", data, error) from None



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
    dramatiq.set_encoder(FastJSONEncoder())
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
    """`actor.send_with_options(args=args, delay=delay)` for each args, PIPELINE_BATCH messages per Redis call.

    The messages are those RedisBroker.enqueue makes (a fresh redis_message_id, the delay queue and eta of a
    delayed one, the middleware's enqueue hooks) and land where its dispatch script puts them (the queue's hash
    and list), so they are indistinguishable from `actor.send`'s; only middleware that overrides an enqueue hook
    is called. Other brokers enqueue one by one: dramatiq's RabbitmqBroker has no batch publish (each publish
    waits for its confirm), and the StubBroker's enqueue is in memory.
    """
    delays = delays or [None] * len(args_list)
    broker = actor.broker
    if not isinstance(broker, RedisClockBroker):
        for args, delay in zip(args_list, delays):
            actor.send_with_options(args=args, delay=delay)
        return
    before, after = _enqueue_hooks(broker)
    encoder = dramatiq.get_encoder()
    for start in range(0, len(args_list), PIPELINE_BATCH):
        by_queue: dict[str, list[str]] = {}
        sent = []
        batch = list(zip(args_list[start:start + PIPELINE_BATCH], delays[start:start + PIPELINE_BATCH]))
        ids = iter(_unique_ids(2 * len(batch)))
        for args, delay in batch:
            options = {"redis_message_id": next(ids)}
            queue_name = actor.queue_name if delay is None else dq_name(actor.queue_name)
            message = dramatiq.Message(queue_name=queue_name, actor_name=actor.actor_name, args=args, kwargs={},
                                       options=options, message_id=next(ids))
            if delay is not None:  # after the message's timestamp, as RedisBroker.enqueue does: eta - timestamp >= delay
                options["eta"] = current_millis() + delay
            for hook in before:
                _call_hook(broker, hook, message, delay, reraise=MiddlewareError)
            encoded = encoder.encode({name: getattr(message, name) for name in _MESSAGE_FIELDS})  # Message.encode
            by_queue.setdefault(queue_name, []).extend((options["redis_message_id"], encoded))
            sent.append((message, delay))
        for queue_name, fields in by_queue.items():
            # One EVALSHA per queue, called on the client itself: a pipeline would first ask SCRIPT EXISTS, a round
            # trip more for every batch. The script is loaded only when the server lacks it (a restart, a flush).
            queue = f"{broker.namespace}:{queue_name}"
            broker.scripts["enqueue_batch"](keys=[queue, f"{queue}.msgs"], args=fields)
        for message, delay in sent:
            for hook in after:
                _call_hook(broker, hook, message, delay, reraise=())


_MESSAGE_FIELDS = tuple(field.name for field in dataclasses.fields(dramatiq.Message))  # what Message.asdict() has


def _unique_ids(count: int) -> list[str]:
    """`count` random UUIDs (version 4) as dramatiq's generate_unique_id writes them, from one read of the
    system's randomness: a fifth of the CPU of `str(uuid4())` each, for the two ids every job message has."""
    raw = bytearray(os.urandom(16 * count))
    raw[6::16] = bytes(byte & 0x0F | 0x40 for byte in raw[6::16])  # the version, 4
    raw[8::16] = bytes(byte & 0x3F | 0x80 for byte in raw[8::16])  # the RFC 4122 variant
    digits = raw.hex()
    return [f"{digits[at:at + 8]}-{digits[at + 8:at + 12]}-{digits[at + 12:at + 16]}-{digits[at + 16:at + 20]}-"
            f"{digits[at + 20:at + 32]}" for at in range(0, 32 * count, 32)]


def _enqueue_hooks(broker: RedisBroker) -> tuple[list, list]:
    """The middleware whose before_enqueue / after_enqueue does something, in dramatiq's order (after: reversed)."""
    def overriding(name: str, middleware: list) -> list:
        return [getattr(m, name) for m in middleware
                if getattr(type(m), name) is not getattr(dramatiq.Middleware, name)]

    return (overriding("before_enqueue", broker.middleware),
            overriding("after_enqueue", list(reversed(broker.middleware))))


def _call_hook(broker, hook, message, delay, *, reraise) -> None:
    """As dramatiq's emit_before / emit_after: a MiddlewareError from a before hook stops the enqueue, any other
    failure is logged and the rest go on."""
    try:
        hook(broker, message, delay)
    except reraise:
        raise
    except Exception:
        broker.logger.critical("Unexpected failure in %s of %r.", hook.__name__, hook.__self__, exc_info=True)
