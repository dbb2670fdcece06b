"""The calendar: which actor is enqueued when. Jobs only enqueue; the work happens in workers/."""

from dataclasses import dataclass

import dramatiq
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.base import BaseTrigger


@dataclass(frozen=True)
class ScheduledJob:
    name: str
    trigger: BaseTrigger
    actor_name: str


SCHEDULE: list[ScheduledJob] = []


def install_jobs(scheduler: BackgroundScheduler, broker: dramatiq.Broker, schedule: list[ScheduledJob]) -> None:
    """Missed runs coalesce into one; downstream every job is idempotent per period."""
    for job in schedule:
        actor = broker.get_actor(job.actor_name)
        scheduler.add_job(actor.send, job.trigger, id=job.name, name=job.name, coalesce=True,
                          max_instances=1, misfire_grace_time=None, replace_existing=True)
