"""Campaign actors: start a step, fan out its chunks, start drip steps when their day comes.

Every job is idempotent: a step is claimed once, a chunk is keyed by (campaign, step, chunk), and
a replay only enqueues again what may be missing (the send step ignores a message already sent).
"""

import logging
import os
import time
from datetime import UTC, datetime

import dramatiq

from shared.broker import enqueue_many
from shared.campaigns.fan_out import due_steps, stalled_steps, start_step
from shared.campaigns.fan_out import fan_out_chunk as make_chunk
from shared.models import Campaign

from . import resources
from .sending import campaign_sender_for

log = logging.getLogger(__name__)


@dramatiq.actor(queue_name="campaigns", max_retries=20)
def fan_out_campaign(campaign_id: str, step: int = 0) -> None:
    """Claim the step and enqueue one job per chunk not made yet, so chunks fan out in parallel across workers."""
    r = resources.current()
    with r.database.unit_of_work() as session:
        started = start_step(session, campaign_id, step, now=datetime.now(UTC))
    if started is not None:
        enqueue_many(fan_out_chunk, [(campaign_id, step, chunk) for chunk in started.missing])


@dramatiq.actor(queue_name="campaigns", max_retries=20)
def fan_out_chunk(campaign_id: str, step: int, chunk: int) -> None:
    """One chunk, on whichever worker process takes it; its log line (with the process id) shows which
    chunks ran side by side."""
    r = resources.current()
    started = time.monotonic()
    with r.database.unit_of_work() as session:
        ids = make_chunk(session, campaign_id, step, chunk, rate_card=r.rate_card,
                         hold_ttl_seconds=r.hold_ttl_seconds, now=datetime.now(UTC))
        sender = campaign_sender_for(session.get(Campaign, campaign_id).account_id)
    enqueue_many(sender, [(message_id,) for message_id in ids])  # lost if we die here: the sweeper's job
    log.info("campaign %s step %d chunk %d: %d sends enqueued in %.0f ms (process %d)", campaign_id, step, chunk,
             len(ids), (time.monotonic() - started) * 1000, os.getpid())


@dramatiq.actor(queue_name="campaigns", max_retries=0)
def start_due_campaign_steps() -> None:
    """Run by the scheduler: first steps sent later (send_at), drip steps whose day has come, and steps whose
    chunk jobs were lost (stalled: fanning out for longer than a waiting message may wait)."""
    r = resources.current()
    now = datetime.now(UTC)
    with r.database.unit_of_work() as session:
        due = due_steps(session, now)
        stalled = stalled_steps(session, now - r.stale_after)
    enqueue_many(fan_out_campaign, due + stalled)
    if due or stalled:
        log.info("campaigns: %d steps due, %d stalled steps fanned out again", len(due), len(stalled))
