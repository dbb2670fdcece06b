"""Brokers for tests: dramatiq's RedisBroker on fakeredis (with Lua) or on the embedded Redis."""

import dramatiq
import fakeredis
from dramatiq import broker as global_state

from intake.asyncio_redis import ASYNCIO_CONNECTION_CLASSES
from shared.broker import make_broker

# The web app's asyncio pool on a fakeredis broker reaches the same fake server.
ASYNCIO_CONNECTION_CLASSES[fakeredis.FakeRedisConnection] = fakeredis.FakeAsyncRedisConnection


def install_broker(client) -> dramatiq.Broker:
    """Make a RedisBroker on `client` the global broker and move every declared actor onto it."""
    previous = global_state.global_broker
    broker = make_broker(client=client)
    if previous is not None:
        for actor in previous.actors.values():
            actor.broker = broker
            broker.declare_actor(actor)
    return broker


def fake_redis_broker() -> dramatiq.Broker:
    return install_broker(fakeredis.FakeRedis())


class EnqueueRecorder(dramatiq.Middleware):
    """Keeps every message enqueued on the broker it is added to."""

    def __init__(self):
        self.messages: list[dramatiq.Message] = []

    def after_enqueue(self, broker, message, delay):
        self.messages.append(message)
