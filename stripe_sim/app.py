"""The stand-in application: Stripe's API, the Checkout and 3-D Secure pages, ``/_sim``, and event delivery."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import AsyncIterator
from pathlib import Path

from aiohttp import web

from . import api, control, pages
from .config import SimulatorConfig
from .delivery import deliver_forever
from .state import config_key, store_key
from .store import Store

DEFAULT_HOST, DEFAULT_PORT = "127.0.0.1", 8082


def init_app(config: SimulatorConfig, database: str | Path) -> web.Application:
    app = web.Application()
    app[config_key] = config
    app[store_key] = Store(database)
    app.cleanup_ctx.append(_delivery_ctx)
    app.add_routes(control.routes)
    app.add_routes(pages.routes)
    app.add_routes(api.routes)
    return app


async def _delivery_ctx(app: web.Application) -> AsyncIterator[None]:
    task = asyncio.create_task(deliver_forever(app[store_key], app[config_key], random.Random()))
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    app[store_key].close()


def run(host: str, port: int, config: SimulatorConfig, database: str | Path) -> None:
    """Serve until interrupted (``python -m stripe_sim``, ``creditq stripe-sim``)."""
    logging.basicConfig(level=logging.INFO)
    web.run_app(init_app(config, database), host=host, port=port, access_log=None)
