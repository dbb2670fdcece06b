"""`creditq scheduler`: the billing calendar; one active instance holds a Redis lease, others stand by."""

import argparse
import functools
import logging
import os
import signal

import redis

from shared.config import load_settings
from shared.redis_url import resolve_redis_url

log = logging.getLogger(__name__)


def register(subparsers) -> None:
    parser = subparsers.add_parser("scheduler", help="run the calendar (one active instance, others stand by)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    settings = load_settings()
    redis_url, embedded = resolve_redis_url(settings)
    os.environ["REDIS_URL"] = redis_url
    from prometheus_client import REGISTRY, Gauge, start_http_server

    import workers
    from scheduler.jobs import SCHEDULE, install_jobs, paced
    from scheduler.lease import RedisLease
    from scheduler.service import SchedulerService
    from shared.db import Database
    from shared.garbage_collection import freeze_startup_heap
    from shared.operations.metrics import OperationsCollector

    client = redis.Redis.from_url(redis_url)
    service = SchedulerService(RedisLease(client, ttl_ms=round(settings.scheduler_lease_seconds * 1000)),
                               functools.partial(install_jobs, broker=workers.broker,
                                                 schedule=paced(SCHEDULE, settings.sweep_interval_seconds)))
    database = Database(settings.database_url, pool_size=1)
    REGISTRY.register(OperationsCollector(database, client))
    Gauge("creditq_scheduler_active", "1 while this scheduler holds the lease and runs the calendar").set_function(
        service.active.is_set)
    try:
        server, _ = start_http_server(settings.scheduler_metrics_port, addr=settings.metrics_host)
    except OSError as error:  # the calendar matters more than its metrics: run without them, and say so
        log.error("no metrics server at %s:%d: %s", settings.metrics_host, settings.scheduler_metrics_port, error)
        server = None
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: service.stop())
    freeze_startup_heap()
    try:
        service.run()
    finally:
        if server is not None:
            server.shutdown()
        database.dispose()
        if embedded is not None:
            embedded.stop()
    return 0
