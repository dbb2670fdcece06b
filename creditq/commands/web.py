"""`creditq web`: the aiohttp intake."""

import argparse
import asyncio
import os
import shutil
import signal

from aiohttp import web

from shared.config import ConfigError, load_settings
from shared.cpu_priority import set_cpu_priority
from shared.redis_url import resolve_redis_url

from .concurrency import MAX_PROCESSES, within
from .metrics_files import fresh_metrics_dir
from .ports import listening_on, refuse_if_taken


def register(subparsers) -> None:
    parser = subparsers.add_parser("web", help="serve the HTTP API and Twilio webhooks")
    parser.add_argument("--host", help="bind address (default: HOST or 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port (default: PORT or 8080)")
    parser.add_argument("--processes", type=int,
                        help="processes serving the port (default: CREDITQ_WEB_PROCESSES or 1; PostgreSQL only)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    settings = load_settings()
    processes = within("--processes", "CREDITQ_WEB_PROCESSES", args.processes, settings.web_processes, MAX_PROCESSES)
    if processes > 1 and settings.database_url.startswith("sqlite"):
        raise ConfigError("--processes (CREDITQ_WEB_PROCESSES) above 1 needs PostgreSQL: SQLite lets one process "
                          "write at a time, so more web processes would only queue on its lock")
    metrics_dir = _export_metrics_dir(processes)
    owner = os.getpid()  # the cleanup below is the parent's alone, never a child's that got here by mistake
    from shared.twilio.gateway import warn_if_simulated

    warn_if_simulated(settings)
    redis_url, embedded = resolve_redis_url(settings)
    os.environ["REDIS_URL"] = redis_url
    set_cpu_priority(settings.web_nice)  # after an embedded Redis started: it serves the workers as well
    host, port = args.host or settings.web_host, args.port or settings.web_port
    try:
        if processes == 1:
            with listening_on(host, port, "--port or PORT", "--host or HOST"):
                _serve(settings, host=host, port=port)
            return 0
        refuse_if_taken(host, port, "--port or PORT", "--host or HOST")
        from prometheus_client import multiprocess

        from intake.prefork import Prefork
        from shared.garbage_collection import import_and_freeze_before_fork

        import_and_freeze_before_fork("intake.app")  # each process still builds its own app after the fork
        return Prefork(processes, lambda: _serve(settings, host=host, port=port, reuse_port=True),
                       on_exit=lambda pid: multiprocess.mark_process_dead(pid, metrics_dir)).run()
    finally:
        if os.getpid() == owner:
            if embedded is not None:
                embedded.stop()
            if metrics_dir is not None:
                shutil.rmtree(metrics_dir, ignore_errors=True)


def _serve(settings, **address) -> None:
    """Serve until SIGTERM or SIGINT: stop listening, let the requests in flight finish (their accept batches commit
    and answer) for up to CREDITQ_SHUTDOWN_TIMEOUT_SECONDS, then close the batchers and the pools. Later stop
    signals (with several processes each child gets the process group's and its parent's) are ignored: the drain
    goes on, and SIGKILL is what ends one early."""
    from intake.app import init_app
    from shared.garbage_collection import freeze_startup_heap

    app = init_app(settings)
    freeze_startup_heap()
    loop = asyncio.new_event_loop()
    stopped = []

    def stop() -> None:
        if stopped:  # a second signal that came with the first: its call was already queued
            return
        stopped.append(True)
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)  # which restores Python's own handlers: a late SIGINT would raise
            signal.signal(signum, signal.SIG_IGN)
        raise web.GracefulExit()

    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop)
    web.run_app(app, **address, access_log=None, print=None, shutdown_timeout=settings.shutdown_timeout_seconds,
                handle_signals=False, loop=loop)


def _export_metrics_dir(processes: int) -> str | None:
    """With several processes, the directory of their metric files, which /metrics sums; with one, none, even if the
    environment names one (another process's, say): it then reports its own."""
    os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)
    return fresh_metrics_dir("web") if processes > 1 else None
