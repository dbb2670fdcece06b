"""What the actors of one worker process share: built once, lazily, from the environment.

Tests install their own with `use(Resources(...))` before running actors.
"""

import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from functools import partial

import redis

from shared.config import Settings, WebhookSettings, load_settings
from shared.db import Database
from shared.events.slots import WebhookSlots
from shared.messaging.rates import RateCard, current_rate_card
from shared.messaging.sender_throttle import SenderThrottle, rates_from_environment
from shared.messaging.sending import Claims
from shared.twilio.gateway import gateway_for


@dataclass
class Resources:
    database: Database
    gateway_for: Callable  # (account_sid | None, auth_token | None) -> TwilioGateway
    throttle: SenderThrottle
    hold_ttl_seconds: int
    stale_after: timedelta  # how long a waiting message may sit before the sweeper enqueues it again
    # how long a create may be under way: connecting and reading may each take the whole Twilio timeout
    placing_takes: timedelta = timedelta(seconds=2 * Settings.twilio_timeout_seconds)
    webhooks: WebhookSettings = WebhookSettings()
    development: bool = False  # CREDITQ_ENV=development: webhook endpoints may be http and on this host
    retention_days: int | None = None  # CREDITQ_RETENTION_DAYS; None: message bodies and numbers are kept
    claims: Claims | None = None  # the send threads' claims, group-committed (None: each claimed alone)
    webhook_slots: WebhookSlots | None = None  # webhook attempts under way at once (None: no cap)

    @property
    def rate_card(self) -> RateCard:
        """The newest rate card version, re-checked every few seconds: a published one is used without a restart."""
        return current_rate_card(self.database.engine)


_resources: Resources | None = None
_lock = threading.Lock()


def current() -> Resources:
    global _resources
    resources = _resources  # every job asks: no lock once they exist
    if resources is not None:
        return resources
    with _lock:
        if _resources is None:
            _resources = _from_environment()
        return _resources


def use(resources: Resources | None) -> None:
    """Install (or with None, forget) the process's resources."""
    global _resources
    with _lock:
        _resources = resources


def _from_environment() -> Resources:
    settings = load_settings()
    # REDIS_URL is exported by `creditq worker` before the actors are imported.
    broker_redis = redis.Redis.from_url(os.environ["REDIS_URL"])
    throttle = SenderThrottle(broker_redis, rates_from_environment())
    database = Database(settings.database_url, pool_size=settings.worker_threads)
    return Resources(
        database=database,
        gateway_for=partial(gateway_for, settings),
        throttle=throttle,
        hold_ttl_seconds=settings.hold_ttl_seconds,
        stale_after=timedelta(seconds=settings.sweep_stale_seconds),
        placing_takes=timedelta(seconds=2 * settings.twilio_timeout_seconds),
        webhooks=settings.webhooks,
        development=settings.development,
        retention_days=settings.retention_days,
        claims=Claims(database, hold_ttl_seconds=settings.hold_ttl_seconds),
        webhook_slots=WebhookSlots(broker_redis, per_account=settings.webhooks.concurrency,
                                   per_process=max(1, settings.worker_threads // 2)),
    )
