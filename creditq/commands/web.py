"""`creditq web`: the aiohttp intake."""

import argparse
import os

from aiohttp import web

from shared.config import load_settings
from shared.redis_url import resolve_redis_url

from .ports import listening_on


def register(subparsers) -> None:
    parser = subparsers.add_parser("web", help="serve the HTTP API and Twilio webhooks")
    parser.add_argument("--host", help="bind address (default: HOST or 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port (default: PORT or 8080)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from intake.app import init_app
    from shared.garbage_collection import freeze_startup_heap
    from shared.twilio.gateway import warn_if_simulated

    settings = load_settings()
    warn_if_simulated(settings)
    redis_url, embedded = resolve_redis_url(settings)
    os.environ["REDIS_URL"] = redis_url
    host, port = args.host or settings.web_host, args.port or settings.web_port
    try:
        with listening_on(host, port, "--port or PORT", "--host or HOST"):
            # SIGTERM: stop listening, let the requests in flight finish (their accept batches commit and answer)
            # for up to CREDITQ_SHUTDOWN_TIMEOUT_SECONDS, then close the batchers and the pools
            app = init_app(settings)
            freeze_startup_heap()
            web.run_app(app, host=host, port=port, access_log=None, print=None,
                        shutdown_timeout=settings.shutdown_timeout_seconds)
    finally:
        if embedded is not None:
            embedded.stop()
    return 0
