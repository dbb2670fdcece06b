"""The calendar: which actor is enqueued when. Jobs only enqueue; the work happens in workers/."""

import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timezone

import dramatiq
import redis
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

log = logging.getLogger(__name__)

# What an enqueue raises while the broker is away (Redis restarting, RabbitMQ unreachable)
BROKER_AWAY = (dramatiq.errors.BrokerConnectionError, redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)


@dataclass(frozen=True)
class ScheduledJob:
    name: str
    trigger: BaseTrigger
    actor_name: str


SCHEDULE: list[ScheduledJob] = [
    ScheduledJob("sweep", IntervalTrigger(seconds=15), "sweep"),  # lost jobs, due scheduled sends, overdue holds
    # webhook events and deliveries whose job was lost, completed campaigns, the month's expiring credits
    ScheduledJob("sweep_calls", IntervalTrigger(seconds=15), "sweep_calls"),  # lost place jobs, calls never reported
    ScheduledJob("sweep_webhooks", IntervalTrigger(seconds=15), "sweep_webhooks"),
    ScheduledJob("campaign_steps", IntervalTrigger(seconds=30), "start_due_campaign_steps"),  # send_at, drip steps
    ScheduledJob("dunning_tick", IntervalTrigger(minutes=1), "dunning_tick"),  # dunning steps, recharges, purchases
    # month-ends due in each account's zone and not closed yet (catch-up after downtime too), pending bills
    ScheduledJob("billing_tick", IntervalTrigger(minutes=1, timezone=timezone.utc), "billing_tick"),
    # low-credit notices a settle job wrote and could not send (settle jobs send their own at once)
    ScheduledJob("low_balance_notices", IntervalTrigger(minutes=5), "send_low_balance_notices"),
    # stored Idempotency-Key answers live 24 h, then go in batches
    ScheduledJob("idempotency_purge", IntervalTrigger(minutes=10), "purge_idempotency_records"),
    # the ledger's new entries into the daily usage that forecasts and the console read
    ScheduledJob("daily_usage", IntervalTrigger(minutes=1), "fold_daily_usage"),
    # message bodies and recipients' numbers past CREDITQ_RETENTION_DAYS, redacted in batches (off when unset)
    ScheduledJob("retention", CronTrigger(hour=3, minute=17, timezone=timezone.utc), "redact_expired"),
]


# The jobs that re-drive from the database what a lost job (a Redis restarted empty, a killed worker) left waiting.
SAFETY_NETS = ("sweep", "sweep_calls", "sweep_webhooks", "campaign_steps", "dunning_tick", "billing_tick")


def paced(schedule: list[ScheduledJob], sweep_interval_seconds: int | None) -> list[ScheduledJob]:
    """The schedule with every safety net run each `sweep_interval_seconds` (CREDITQ_SWEEP_INTERVAL_SECONDS) instead
    of at its own pace; None leaves it as it is. Each is idempotent, so running it more often only costs queries."""
    if sweep_interval_seconds is None:
        return schedule
    every = IntervalTrigger(seconds=sweep_interval_seconds, timezone=timezone.utc)
    return [replace(job, trigger=every) if job.name in SAFETY_NETS else job for job in schedule]


def install_jobs(scheduler: BackgroundScheduler, broker: dramatiq.Broker, schedule: list[ScheduledJob]) -> None:
    """Missed runs coalesce into one; downstream every job is idempotent per period.

    The interval jobs run once at once: a scheduler that has just taken the lease (a standby after a failover)
    finishes what the last one left, a month-end half enqueued included, now rather than an interval later.
    """
    now = datetime.now(timezone.utc)
    for job in schedule:
        actor = broker.get_actor(job.actor_name)
        at_once = {"next_run_time": now} if isinstance(job.trigger, IntervalTrigger) else {}
        scheduler.add_job(_enqueuer(actor, job.name), job.trigger, id=job.name, name=job.name, coalesce=True,
                          max_instances=1, misfire_grace_time=None, replace_existing=True, **at_once)


def _enqueuer(actor: dramatiq.Actor, name: str) -> Callable[[], None]:
    """A job's run. With the broker away it logs one line, not a traceback a run: the next run tries again (and
    each job is idempotent), while the lease decides whether this scheduler stays the active one."""

    def enqueue() -> None:
        try:
            actor.send()
        except BROKER_AWAY as error:
            log.warning("%s not enqueued: the broker is away (%s); the next run tries again", name, error)

    return enqueue
