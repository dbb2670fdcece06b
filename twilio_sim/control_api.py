"""``/_sim/*``: what tests use to steer a running simulator and to see what it was asked to send.

Not part of Twilio's API, and unauthenticated: the simulator is a dev and test tool.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from .config import ConfigError, SimulatorConfig
from .state import config_key, faults_key, reporter_key, rng_key, store_key

STARTUP_ONLY = frozenset({"callback_concurrency"})

initial_config_key = web.AppKey("initial_config", SimulatorConfig)
routes = web.RouteTableDef()


@routes.get("/_sim/config")
async def get_config(request: web.Request) -> web.Response:
    return web.json_response(request.app[config_key].as_dict())


@routes.post("/_sim/config")
async def update_config(request: web.Request) -> web.Response:
    """Change some knobs, e.g. ``{"rate_429": 0.5}`` or ``{"auth_token": "rotated"}``."""
    try:
        changes = await request.json()
        if not isinstance(changes, dict):
            raise ConfigError("expected a JSON object of settings")
        if STARTUP_ONLY & changes.keys():
            raise ConfigError(f"fixed at start-up: {', '.join(sorted(STARTUP_ONLY & changes.keys()))}")
        _apply(request.app, changes)
    except (ValueError, ConfigError) as error:
        return web.json_response({"error": str(error)}, status=400)
    return web.json_response(request.app[config_key].as_dict())


@routes.get("/_sim/messages")
async def sent_messages(request: web.Request) -> web.Response:
    """Every accepted message, oldest first, with how many creates shared its To and Body."""
    store = request.app[store_key]
    messages = [
        {
            "sid": message.sid,
            "to": message.to,
            "from": message.from_,
            "body": message.body,
            "num_segments": message.num_segments,
            "status": message.status,
            "error_code": message.error_code,
            "creates": store.creates_of(message),
        }
        for message in store
    ]
    return web.json_response(
        {
            "count": len(messages),
            "messages": messages,
            "duplicates": [m for m in messages if m["creates"] > 1],
        }
    )


@routes.get("/_sim/faults")
async def injected_faults(request: web.Request) -> web.Response:
    """How many injected errors were served, by kind: lets a test wait until a fault really happened."""
    return web.json_response(dict(request.app[faults_key]))


@routes.post("/_sim/reset")
async def reset(request: web.Request) -> web.Response:
    """Forget all messages and pending callbacks, and restore the start-up configuration."""
    request.app[store_key].clear()
    request.app[faults_key].clear()
    request.app[reporter_key].forget_all()
    _apply(request.app, request.app[initial_config_key].as_dict())
    return web.json_response(request.app[config_key].as_dict())


def _apply(app: web.Application, changes: dict[str, Any]) -> None:
    config = app[config_key]
    config.apply(changes)
    if "seed" in changes:
        app[rng_key].seed(config.seed)
