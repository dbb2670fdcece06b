"""Webhook events: dispatch (an event's deliveries), deliver (one attempt, then its retry), and their sweeper.

Every transaction that commits events hands their ids to `dispatch_webhook_event` (shared.events.outbox.on_written);
the sweeper enqueues what a crash lost. Retries are scheduled here, not by dramatiq's Retries: the delay is the
delivery's own backoff, stored with it, so a lost retry job is found by the sweeper at the same moment.
"""

import logging
from datetime import UTC, datetime

import dramatiq

from shared.billing.expiring_notices import note_expiring
from shared.broker import enqueue_many
from shared.campaigns.completion import complete_finished
from shared.events import delivery, outbox

from . import resources

log = logging.getLogger(__name__)


@dramatiq.actor(queue_name="webhooks", max_retries=20)
def dispatch_webhook_event(event_id: str) -> None:
    """Idempotent: an event already dispatched makes no more deliveries."""
    r = resources.current()
    with r.database.unit_of_work() as session:
        delivery_ids = delivery.dispatch(session, event_id, settings=r.webhooks, now=datetime.now(UTC))
    enqueue_many(deliver_webhook, [(delivery_id,) for delivery_id in delivery_ids])


@dramatiq.actor(queue_name="webhooks", max_retries=3)
def deliver_webhook(delivery_id: str, deferrals: int = 0) -> None:
    """One attempt; a second job for the same delivery finds it claimed or done and does nothing. `deferrals`: how
    often the attempt found no slot free (shared.events.slots) and waited."""
    r = resources.current()
    outcome = delivery.attempt(r.database, delivery_id, settings=r.webhooks, development=r.development,
                               now=lambda: datetime.now(UTC), slots=r.webhook_slots, deferrals=deferrals)
    if outcome.retry_in_seconds is not None:
        deliver_webhook.send_with_options(args=(delivery_id,),
                                          kwargs={"deferrals": deferrals + 1} if outcome.status == "deferred" else {},
                                          delay=int(outcome.retry_in_seconds * 1000))


@dramatiq.actor(queue_name="default", max_retries=0)
def sweep_webhooks() -> None:
    """Not retried: the next scheduled sweep does the same work."""
    r = resources.current()
    now = datetime.now(UTC)
    with r.database.unit_of_work() as session:
        lost = delivery.lost(session, now=now, stale_after=r.stale_after)
    with r.database.unit_of_work() as session:
        completed = complete_finished(session, now=now)
    with r.database.unit_of_work() as session:
        expiring = note_expiring(session, now=now)
    enqueue_many(dispatch_webhook_event, [(event_id,) for event_id in lost.events])
    # as spent its quick tries: one still finding no slot waits for the next sweep, not for three jobs of its own
    enqueue_many(deliver_webhook, [(delivery_id, delivery.QUICK_TRIES) for delivery_id in lost.deliveries])
    if lost.events or lost.deliveries or completed or expiring:
        log.info("sweep_webhooks: %d events and %d deliveries enqueued again, %d campaigns completed, "
                 "%d expiring-credit reports", len(lost.events), len(lost.deliveries), len(completed), len(expiring))


outbox.on_written(lambda event_ids: enqueue_many(dispatch_webhook_event, [(event_id,) for event_id in event_ids]))
