"""PUT/GET /v1/accounts/{id}/auto-recharge: settings, and the state (failures, backoff, disabled_reason)."""

import asyncio
import logging
from datetime import UTC, datetime

from aiohttp import web
from sqlalchemy import select

from shared.billing import auto_recharge
from shared.billing.gateways import gateway_from_settings
from shared.billing.payments import CardRefused, GatewayUnavailable
from shared.billing.purchases import check_payment_method, customer_of
from shared.db import Database
from shared.errors import NotFound
from shared.ids import new_id
from shared.models import Account, DunningRun
from shared.money import format_credits

from ..appkeys import DATABASE, ENQUEUER, SETTINGS
from ..auth import require_access
from ..bodies import json_response, read_json
from ..errors import Problem
from ..fields import Fields
from ..openapi import problem
from ..policy import BILLING, action
from .accounts import _ACCOUNT_PATH, _CREDITS, _INSTANT, _json
from .purchases import PAYMENT_METHOD

log = logging.getLogger(__name__)

routes = web.RouteTableDef()


@routes.put("/v1/accounts/{account_id}/auto-recharge")
@action(BILLING)
async def put_auto_recharge(request: web.Request) -> web.Response:
    account_id = request.match_info["account_id"]
    require_access(request, account_id)
    body = await read_json(request)
    amounts = Fields({name: body.get(name) for name in ("threshold", "credits")})  # the card is checked below
    threshold, credits = amounts.credits("threshold") or 0, amounts.credits("credits", required=True)
    amounts.done()

    gateway = gateway_from_settings(request.app[SETTINGS])

    def save(database: Database) -> tuple[auto_recharge.AutoRechargeView, str | None]:
        card = body.get("payment_method")
        if card is not None:  # saved to the account's Customer first (a SetupIntent): the saved one is charged
            card = check_payment_method(card)
            with database.read_only() as session:
                if session.get(Account, account_id) is None:
                    raise NotFound(f"No account {account_id}.")
            customer = customer_of(database, gateway, account_id, now=datetime.now(UTC))
            card = gateway.save_card(customer=customer, payment_method=card, idempotency_key=new_id("setup")
                                     ).payment_method
        with database.unit_of_work() as session:
            view = auto_recharge.configure(session, account_id, enabled=body.get("enabled"), threshold_mc=threshold,
                                           credits_mc=credits, payment_method=card, now=datetime.now(UTC))
            unpaid = session.scalar(select(DunningRun.id).where(DunningRun.unpaid_account_id == account_id))
        return view, unpaid if card is not None else None

    try:
        view, unpaid_run = await asyncio.to_thread(save, request.app[DATABASE])
    except CardRefused as refused:
        raise Problem(402, "Card declined", str(refused), decline_code=refused.decline_code) from None
    except GatewayUnavailable as unavailable:
        raise Problem(503, "Payment gateway unavailable", f"{unavailable} Try again.") from None
    if unpaid_run is not None:
        try:
            await request.app[ENQUEUER].send("retry_dunning_payment", unpaid_run)
        except Exception:  # committed: the run's next step pays with the new card
            log.exception("could not enqueue retry_dunning_payment for %s; its next step will pay", unpaid_run)
    return json_response(view_json(view))


@routes.get("/v1/accounts/{account_id}/auto-recharge")
@action(BILLING)
async def get_auto_recharge(request: web.Request) -> web.Response:
    account_id = request.match_info["account_id"]
    require_access(request, account_id)

    def read(database: Database) -> auto_recharge.AutoRechargeView:
        with database.read_only() as session:
            return auto_recharge.get_settings(session, account_id)

    return json_response(view_json(await asyncio.to_thread(read, request.app[DATABASE])))


def view_json(view: auto_recharge.AutoRechargeView) -> dict:
    return {
        "enabled": view.enabled,
        "threshold": format_credits(view.threshold),
        "credits": format_credits(view.credits),
        "payment_method": view.payment_method,
        "state": "disabled" if view.disabled_reason else "in_flight" if view.in_flight else
                 "backing_off" if view.next_attempt_at else "ready" if view.enabled else "off",
        "consecutive_failures": view.consecutive_failures,
        "next_attempt_at": view.next_attempt_at.isoformat() if view.next_attempt_at else None,
        "disabled_reason": view.disabled_reason,
        "last_payment_id": view.last_payment_id,
    }


_VIEW = {"type": "object", "properties": {
    "enabled": {"type": "boolean"},
    "threshold": {**_CREDITS, "description": "Recharge when available credits fall under this."},
    "credits": {**_CREDITS, "description": "The bucket bought each time."},
    "payment_method": {"type": ["string", "null"],
                       "description": "The card on file, saved to the account's Stripe Customer (also used by "
                                      "dunning and month-end bills)."},
    "state": {"type": "string", "enum": ["off", "ready", "in_flight", "backing_off", "disabled"]},
    "consecutive_failures": {"type": "integer"},
    "next_attempt_at": {**_INSTANT, "type": ["string", "null"], "description": "Backoff after a decline."},
    "disabled_reason": {"type": ["string", "null"],
                        "description": f"Set after {auto_recharge.MAX_FAILURES} declines in a row; saving a "
                                       "payment_method clears it."},
    "last_payment_id": {"type": ["string", "null"]},
}}

# What a request looks like: the document's examples (clients copy them, the contract tests send them).
_SETTINGS_EXAMPLE = {"enabled": True, "threshold": "10", "credits": "100", "payment_method": "pm_card_visa"}

OPENAPI_PATHS = {
    "/v1/accounts/{account_id}/auto-recharge": {
        "parameters": [_ACCOUNT_PATH],
        "put": {
            "operationId": "setAutoRecharge",
            "summary": "Configure auto-recharge",
            "description": ("After a settlement leaves available credits under `threshold`, one payment buys the "
                            "`credits` bucket (one at a time per account). A decline backs off and starts dunning; "
                            "repeated declines disable it until a payment_method is saved again, which also "
                            "retries an unpaid dunning run."),
            "requestBody": {"required": True, **_json({"type": "object", "examples": [_SETTINGS_EXAMPLE],
                                                       "required": ["enabled", "credits"],
                                                        "properties": {
                "enabled": {"type": "boolean"}, "threshold": _CREDITS, "credits": _CREDITS,
                "payment_method": PAYMENT_METHOD}})},
            "responses": {"200": {"description": "Saved", **_json(_VIEW)},
                          "404": problem(404, "No such account"),
                          "402": problem(402, "The card could not be saved (declined by its bank)"),
                          "422": problem(422, "Not a bucket, no payment method to enable with, one that is not "
                                              "a gateway token (a card number), or one saved by another account"),
                          "503": problem(503, "Stripe did not answer; try again")},
        },
        "get": {"operationId": "getAutoRecharge", "summary": "Auto-recharge settings and state",
                "responses": {"200": {"description": "Settings and state", **_json(_VIEW)},
                              "404": problem(404, "No such account")}},
    },
}
