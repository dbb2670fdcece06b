"""purge_idempotency_records: the scheduler's job that keeps the stored Idempotency-Key answers to 24 hours."""

import logging
from datetime import UTC, datetime

import dramatiq

from shared import idempotency

from . import resources

log = logging.getLogger(__name__)


@dramatiq.actor(queue_name="default", max_retries=0, time_limit=300_000)
def purge_idempotency_records() -> None:
    """Not retried: the next scheduled run purges what this one left. Batched, so no long transaction."""
    purged = idempotency.purge(resources.current().database, now=datetime.now(UTC))
    if purged:
        log.info("purged %d idempotency records older than %s", purged, idempotency.KEEP)
