"""The scheduler process: stand by until the lease is ours, run the calendar while we hold it.

Redis going away does not end the process: a lease that cannot be renewed counts as lost (the calendar stops, since
another scheduler may take the lease once Redis answers), and the process keeps trying to take it. A Redis that
comes back empty has no lease at all: the first scheduler to ask takes it and runs the calendar again.
"""

import logging
import threading
from collections.abc import Callable

import redis
from apscheduler.schedulers.background import BackgroundScheduler

from .lease import RedisLease

log = logging.getLogger(__name__)

JobInstaller = Callable[[BackgroundScheduler], None]


class SchedulerService:
    """Only the lease holder runs jobs; losing the lease stops them before anyone else starts."""

    def __init__(self, lease: RedisLease, install_jobs: JobInstaller, *, timezone: str = "UTC"):
        self.lease = lease
        self.install_jobs = install_jobs
        self.timezone = timezone
        self.stopping = threading.Event()
        self.active = threading.Event()

    def run(self) -> None:
        interval = self.lease.ttl_ms / 3000
        scheduler: BackgroundScheduler | None = None
        try:
            while not self.stopping.is_set():
                if scheduler is None:
                    if self._lease_call(self.lease.acquire):
                        scheduler = self._start()
                elif not self._lease_call(self.lease.renew):
                    log.warning("scheduler lease lost; standing by")
                    self._stop(scheduler)
                    scheduler = None
                self.stopping.wait(interval)
        finally:
            if scheduler is not None:
                self._stop(scheduler)
                self._lease_call(self.lease.release)  # else it lapses by itself

    @staticmethod
    def _lease_call(call: Callable[[], bool | None]) -> bool:
        """The lease's answer; False while Redis does not answer (logged, retried on the next turn)."""
        try:
            return bool(call())
        except redis.RedisError as error:
            log.warning("scheduler lease: Redis did not answer (%s)", error)
            return False

    def stop(self) -> None:
        self.stopping.set()

    def _start(self) -> BackgroundScheduler:
        log.info("scheduler lease acquired; running the calendar")
        scheduler = BackgroundScheduler(timezone=self.timezone)
        self.install_jobs(scheduler)
        scheduler.start()
        self.active.set()
        return scheduler

    def _stop(self, scheduler: BackgroundScheduler) -> None:
        scheduler.shutdown(wait=False)
        self.active.clear()
