"""sweep: the scheduler's periodic safety net (shared.messaging.sweeper); and the jobs that make it rarely needed:
release_parked when credits land, release_scheduled when a scheduled message's time comes."""

import logging
from datetime import UTC, datetime

import dramatiq

from shared.messaging import parking
from shared.messaging.messages import in_campaigns
from shared.messaging.sweeper import release_scheduled as release_if_due
from shared.messaging.sweeper import sweep as sweep_once

from . import resources
from .sending import enqueue_sends, send_message
from .settling import settle_message

log = logging.getLogger(__name__)


@dramatiq.actor(queue_name="default", max_retries=0, time_limit=300_000)
def sweep() -> None:
    """Not retried: the next scheduled sweep does the same work."""
    r = resources.current()
    to_send: list[str] = []
    report = sweep_once(r.database, enqueue=to_send.append, gateway_for=r.gateway_for, rate_card=r.rate_card,
                        now=datetime.now(UTC), stale_after=r.stale_after)
    with r.database.read_only() as session:
        bulk = in_campaigns(session, to_send)
    enqueue_sends(to_send, bulk)  # a round trip per batch, not per message
    for message_id in report.to_settle:
        settle_message.send(message_id)
    if report.enqueued or report.reconciled or report.unparked or report.to_settle or report.asked:
        log.info("sweep: %d enqueued, %d reconciled, %d unparked, %d to settle, %d asked of Twilio after their charge",
                 len(report.enqueued), len(report.reconciled), len(report.unparked), len(report.to_settle),
                 len(report.asked))


@dramatiq.actor(queue_name="default", max_retries=20)
def release_parked(account_id: str) -> None:
    """Enqueued when credits land on an account (shared.messaging.parking.credits_added, the grants endpoint)."""
    r = resources.current()
    with r.database.unit_of_work() as session:
        released = parking.release_parked(session, account_id, now=datetime.now(UTC))
        bulk = in_campaigns(session, released)
    enqueue_sends(released, bulk)  # lost if we die here: the sweeper enqueues accepted messages left waiting


parking.on_credits_added(release_parked.send)


# Its own queue: days-long delays here must not hold up the send queue's short throttle delays.
@dramatiq.actor(queue_name="scheduled", max_retries=20)
def release_scheduled(message_id: str) -> None:
    """Enqueued by intake with a delay until the message's send_at; the sweeper releases what this misses."""
    r = resources.current()
    with r.database.unit_of_work() as session:
        wait_ms = release_if_due(session, message_id, now=datetime.now(UTC))
    if wait_ms == 0:
        send_message.send(message_id)
    elif wait_ms is not None:  # came early (clocks differ): wait the rest
        release_scheduled.send_with_options(args=(message_id,), delay=wait_ms)
