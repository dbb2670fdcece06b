"""redact_expired: the scheduler's daily retention pass (shared.operations.retention)."""

import logging
from datetime import UTC, datetime

import dramatiq

from shared.operations.retention import redact_expired as redact

from . import resources

log = logging.getLogger(__name__)


@dramatiq.actor(queue_name="default", max_retries=0, time_limit=3_600_000)
def redact_expired() -> None:
    """Not retried: the next day's run redacts what this one did not reach (each row is redacted once)."""
    r = resources.current()
    if r.retention_days is None:
        return
    redacted = redact(r.database, now=datetime.now(UTC), retention_days=r.retention_days)
    if redacted.messages or redacted.campaigns or redacted.events:
        log.info("retention: redacted %d messages, %d campaigns' recipients, %d events older than %d days",
                 redacted.messages, redacted.campaigns, redacted.events, r.retention_days)
