"""The dramatiq broker on Redis, shared by the intake (enqueue only), the workers and the scheduler."""

import os

import dramatiq
from dramatiq.brokers.redis import RedisBroker
from dramatiq.middleware import AgeLimit, Callbacks, Pipelines, Retries, ShutdownNotifications, TimeLimit

from .config import ConfigError


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
