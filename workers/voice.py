"""Voice actors: place a call, confirm a final status with Twilio, fan a broadcast out into place jobs, and the
calls' sweep (shared.voice does the work)."""

import logging
from datetime import UTC, datetime

import dramatiq

from shared.broker import enqueue_many
from shared.errors import NotFinalYet
from shared.voice import broadcasts, placing, progress, sweeper

from . import resources

log = logging.getLogger(__name__)


def _now() -> datetime:
    return datetime.now(UTC)


@dramatiq.actor(queue_name="calls", max_retries=20)
def place_call(call_id: str) -> None:
    """Transient Twilio failures and quiet hours run the job again later; a call is never placed twice (placing)."""
    r = resources.current()
    try:
        placing.place_call(r.database, call_id, gateway_for=r.gateway_for, rate_card=r.rate_card,
                           hold_ttl_seconds=r.hold_ttl_seconds, now=_now)
    except placing.PlaceLater as later:
        delay_ms = None if later.delay_seconds is None else int(later.delay_seconds * 1000)
        if delay_ms is not None and delay_ms > 60_000:  # quiet hours: a job of its own at their end, no retry count
            place_call.send_with_options(args=(call_id,), delay=delay_ms)
            return
        raise dramatiq.Retry(str(later), delay=delay_ms) from later


@dramatiq.actor(actor_name=progress.CONFIRM_CALL_ACTOR, queue_name="calls", max_retries=8, min_backoff=5_000,
                max_backoff=600_000)
def confirm_call_status(call_id: str) -> None:
    """A final status the call's own account signed, asked of Twilio (progress.confirm_call); tried again, backing
    off from 5 s, for about 20 minutes while Twilio does not say final. The call sweep is the net after that."""
    r = resources.current()
    try:
        progress.confirm_call(r.database, call_id, gateway_for=r.gateway_for, rate_card=r.rate_card, now=_now())
    except NotFinalYet as not_yet:
        raise dramatiq.Retry(str(not_yet)) from not_yet


@dramatiq.actor(queue_name="broadcasts", max_retries=20)  # its own queue: never behind the place jobs it makes
def fan_out_broadcast(broadcast_id: str) -> None:
    """Enqueue the place job of every call of the broadcast not placed yet; run again on resume. Enqueueing a call
    twice is harmless: its second job finds it taken."""
    with resources.current().database.read_only() as session:
        waiting = broadcasts.waiting_calls(session, broadcast_id)
    enqueue_many(place_call, [(call_id,) for call_id in waiting])


@dramatiq.actor(queue_name="default", max_retries=0, time_limit=300_000)
def sweep_calls() -> None:
    """Not retried: the next scheduled sweep does the same work."""
    r = resources.current()
    report = sweeper.sweep_calls(r.database, gateway_for=r.gateway_for, rate_card=r.rate_card, now=_now(),
                                 stale_after=r.stale_after, placing_takes=r.placing_takes)
    enqueue_many(place_call, [(call_id,) for call_id in report.enqueued])
    if report.enqueued or report.reconciled:
        log.info("call sweep: %d enqueued, %d reconciled", len(report.enqueued), len(report.reconciled))
