"""The simulator application: Twilio's Accounts, Messages and Calls APIs plus the ``/_sim`` control API."""

from __future__ import annotations

import dataclasses
import logging
import os
import random
from collections import Counter
from collections.abc import AsyncIterator

import aiohttp
from aiohttp import web

from . import accounts_api, calls_api, control_api, messages_api
from .accounts import AccountRegistry
from .auth import auth_middleware
from .config import SimulatorConfig
from .errors import error_middleware
from .faults import fault_middleware
from .state import (
    accounts_key,
    call_runner_key,
    call_store_key,
    config_key,
    faults_key,
    reporter_key,
    rng_key,
    store_key,
)
from .status_reporter import StatusReporter
from .store import MessageStore
from .voice import CallRunner, CallStore

DEFAULT_HOST, DEFAULT_PORT = "127.0.0.1", 8090


def init_app(config: SimulatorConfig | None = None) -> web.Application:
    config = config or SimulatorConfig()
    app = web.Application(middlewares=[error_middleware, auth_middleware, fault_middleware])
    app[config_key] = config
    app[control_api.initial_config_key] = dataclasses.replace(config)
    app[accounts_key] = AccountRegistry(config)
    app[store_key] = MessageStore()
    app[call_store_key] = CallStore()
    app[faults_key] = Counter()
    app[rng_key] = random.Random(config.seed)
    app.cleanup_ctx.append(status_reporter_ctx)
    app.add_routes(accounts_api.routes)
    app.add_routes(messages_api.routes)
    app.add_routes(calls_api.routes)
    app.add_routes(control_api.routes)
    return app


async def status_reporter_ctx(app: web.Application) -> AsyncIterator[None]:
    """One ClientSession and worker pool for all callbacks, for the app's lifetime."""
    config = app[config_key]
    connector = aiohttp.TCPConnector(limit=config.callback_concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        reporter = StatusReporter(config, app[accounts_key], app[rng_key], session)
        app[reporter_key] = reporter
        app[call_runner_key] = CallRunner(config, app[accounts_key], app[rng_key], session, app[call_store_key])
        yield
        await app[call_runner_key].close()
        await reporter.close()


def run(
    host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, config: SimulatorConfig | None = None
) -> None:
    """Serve the simulator until interrupted (``python -m twilio_sim``, ``creditq twilio-sim``)."""
    logging.basicConfig(level=logging.INFO)
    # TWILIO_SIM_LOG_LEVEL=WARNING keeps a benchmark's simulator from spending its CPU on log lines.
    for name in ("twilio_sim", "aiohttp"):
        logging.getLogger(name).setLevel(os.environ.get("TWILIO_SIM_LOG_LEVEL", "INFO").upper())
    web.run_app(init_app(config), host=host, port=port, access_log=None)
