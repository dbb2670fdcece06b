"""`creditq worker`: dramatiq worker processes for every actor in `workers`."""

import argparse
import os
import shutil

import dramatiq.cli

from shared.config import load_settings
from shared.cpu_priority import set_cpu_priority
from shared.garbage_collection import import_and_freeze_before_fork
from shared.redis_url import resolve_redis_url

from .concurrency import MAX_PROCESSES, MAX_THREADS, within
from .metrics_files import fresh_metrics_dir
from .ports import refuse_if_taken

BROKER_MODULE = "workers.process"


def register(subparsers) -> None:
    parser = subparsers.add_parser("worker", help="run dramatiq workers (send, settle, fan-out, billing jobs)")
    parser.add_argument("--processes", type=int, help="worker processes (default: CREDITQ_WORKER_PROCESSES or 1)")
    parser.add_argument("--threads", type=int, help="threads per process (default: CREDITQ_WORKER_THREADS or 16)")
    parser.add_argument("--queues", nargs="*", help="only these queues")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    settings = load_settings()
    processes = within("--processes", "CREDITQ_WORKER_PROCESSES", args.processes, settings.worker_processes,
                       MAX_PROCESSES)
    threads = within("--threads", "CREDITQ_WORKER_THREADS", args.threads, settings.worker_threads, MAX_THREADS)
    refuse_if_taken(settings.metrics_host, settings.worker_metrics_port, "CREDITQ_WORKER_METRICS_PORT",
                    "CREDITQ_METRICS_HOST")
    metrics_dir = _export_metrics_settings(settings)
    from shared.twilio.gateway import warn_if_simulated

    warn_if_simulated(settings)
    redis_url, embedded = resolve_redis_url(settings)
    os.environ["REDIS_URL"] = redis_url
    set_cpu_priority(settings.worker_nice)  # after an embedded Redis started: it serves the web as well
    os.environ["CREDITQ_WORKER_THREADS"] = str(threads)  # workers.resources sizes its database pool to it
    # SIGTERM: each process stops fetching, puts the jobs it prefetched back on their queues and lets the running
    # ones finish for up to CREDITQ_SHUTDOWN_TIMEOUT_SECONDS; one still running then is redelivered when its
    # process's heartbeat lapses (every step is idempotent)
    argv = [BROKER_MODULE, "--processes", str(processes),
            "--threads", str(threads), "--worker-shutdown-timeout", str(int(settings.shutdown_timeout_seconds * 1000))]
    if args.queues:
        argv += ["--queues", *args.queues]
    try:
        from workers.warm_up import TWILIO_RESOURCES

        import_and_freeze_before_fork(BROKER_MODULE, TWILIO_RESOURCES)  # the actors, and what a send imports
        return dramatiq.cli.main(dramatiq.cli.make_argument_parser().parse_args(argv)) or 0
    finally:
        if embedded is not None:
            embedded.stop()
        shutil.rmtree(metrics_dir, ignore_errors=True)


def _export_metrics_settings(settings) -> str:
    """A fresh directory for this run's per-process metric files (a stale one would add old counts to new ones),
    and where dramatiq's exposition server listens; set before anything imports prometheus_client."""
    metrics_dir = fresh_metrics_dir("worker")
    os.environ.update(dramatiq_prom_db=metrics_dir, dramatiq_prom_host=settings.metrics_host,
                      dramatiq_prom_port=str(settings.worker_metrics_port))
    return metrics_dir
