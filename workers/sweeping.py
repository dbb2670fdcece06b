"""sweep: the scheduler's periodic safety net (shared.sweeper)."""

import logging

from datetime import UTC, datetime

import dramatiq

from shared.sweeper import sweep as sweep_once

from . import resources
from .sending import send_message

log = logging.getLogger(__name__)


@dramatiq.actor(queue_name="default", max_retries=0, time_limit=300_000)
def sweep() -> None:
    """Not retried: the next scheduled sweep does the same work."""
    r = resources.current()
    report = sweep_once(r.database, enqueue=send_message.send, gateway_for=r.gateway_for, rate_card=r.rate_card,
                        now=datetime.now(UTC), stale_after=r.stale_after)
    if report.enqueued or report.reconciled or report.unparked:
        log.info("sweep: %d enqueued, %d reconciled, %d unparked", len(report.enqueued), len(report.reconciled),
                 len(report.unparked))
