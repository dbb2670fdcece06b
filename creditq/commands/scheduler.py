"""`creditq scheduler`: the billing calendar; one active instance holds a Redis lease, others stand by."""

import argparse
import functools
import os
import signal

import redis

from shared.config import load_settings
from shared.redis_url import resolve_redis_url


def register(subparsers) -> None:
    parser = subparsers.add_parser("scheduler", help="run the calendar (one active instance, others stand by)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    settings = load_settings()
    redis_url, embedded = resolve_redis_url(settings)
    os.environ["REDIS_URL"] = redis_url
    import workers
    from scheduler.jobs import SCHEDULE, install_jobs
    from scheduler.lease import RedisLease
    from scheduler.service import SchedulerService

    service = SchedulerService(RedisLease(redis.Redis.from_url(redis_url)),
                               functools.partial(install_jobs, broker=workers.broker, schedule=SCHEDULE))
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: service.stop())
    try:
        service.run()
    finally:
        if embedded is not None:
            embedded.stop()
    return 0
