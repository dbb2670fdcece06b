"""The scheduler process: stand by until the lease is ours, run the calendar while we hold it."""

import logging
import threading
from collections.abc import Callable

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
                    if self.lease.acquire():
                        scheduler = self._start()
                elif not self.lease.renew():
                    log.warning("scheduler lease lost; standing by")
                    self._stop(scheduler)
                    scheduler = None
                self.stopping.wait(interval)
        finally:
            if scheduler is not None:
                self._stop(scheduler)
                self.lease.release()

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
