"""``/_sim``: what tests and developers read and steer — the PaymentIntent log, events, knobs, disputes."""

from __future__ import annotations

from aiohttp import web

from .api import emit, open_dispute
from .config import ConfigError
from .state import config_key, store_key

routes = web.RouteTableDef()


@routes.get("/_sim/payment_intents")
async def payment_intents(request: web.Request) -> web.Response:
    """Every PaymentIntent made, with the Idempotency-Key of the request that made it."""
    return web.json_response({"data": request.app[store_key].created_by_key("payment_intent")})


@routes.get("/_sim/events")
async def events(request: web.Request) -> web.Response:
    return web.json_response({"data": request.app[store_key].events()})


@routes.get("/_sim/config")
async def get_config(request: web.Request) -> web.Response:
    return web.json_response(_public(request.app[config_key].as_dict()))


@routes.post("/_sim/config")
async def set_config(request: web.Request) -> web.Response:
    config = request.app[config_key]
    try:
        config.apply(await request.json())
    except (ConfigError, ValueError) as error:
        return web.json_response({"error": str(error)}, status=400)
    return web.json_response(_public(config.as_dict()))


@routes.post("/_sim/disputes")
async def create_dispute(request: web.Request) -> web.Response:
    """A cardholder disputes a charge (``{"charge": "ch_..."}``): `charge.dispute.created`."""
    store = request.app[store_key]
    body = await request.json()
    with store.transaction():
        charge = store.get(str(body.get("charge")), "charge")
        if charge is None or not charge["paid"]:
            return web.json_response({"error": "no such paid charge"}, status=404)
        dispute = open_dispute(store, request, charge)
    return web.json_response(dispute)


@routes.post("/_sim/disputes/{id}/close")
async def close_dispute(request: web.Request) -> web.Response:
    """The bank decides (``{"status": "won"}`` or ``"lost"``): `charge.dispute.closed`."""
    store = request.app[store_key]
    status = (await request.json()).get("status")
    if status not in ("won", "lost"):
        return web.json_response({"error": "status must be won or lost"}, status=400)
    with store.transaction():
        dispute = store.get(request.match_info["id"], "dispute")
        if dispute is None:
            return web.json_response({"error": "no such dispute"}, status=404)
        dispute["status"] = status
        store.put(dispute)
        emit(store, request, "charge.dispute.closed", dispute)
    return web.json_response(dispute)


def _public(values: dict) -> dict:
    return {name: value for name, value in values.items() if name not in ("api_key", "webhook_secret")}
