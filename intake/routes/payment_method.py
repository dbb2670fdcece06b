"""The card on file: a setup page to save a new one (Stripe Checkout in setup mode), what is on file now, the
signed link dunning messages carry, and Stripe's webhooks (`/webhooks/stripe`) that bring every payment's and
card's outcome. The card itself never passes through creditq: the customer types it into Stripe's page.
"""

import asyncio
import logging
from datetime import UTC, datetime

from aiohttp import web

from shared.billing import payment_events, payment_links
from shared.billing.gateways import gateway_from_settings
from shared.billing.payments import GatewayUnavailable
from shared.billing.purchases import customer_of, payment_method_on_file
from shared.billing.stripe_gateway import InvalidEvent, verify_event
from shared.db import Database
from shared.errors import NotFound
from shared.models import Account

from ..appkeys import DATABASE, ENQUEUER, SETTINGS
from ..auth import require_access
from ..bodies import read_body
from ..errors import Problem
from ..idempotency import idempotent
from ..openapi import problem
from ..policy import BILLING, PUBLIC, action
from .accounts import _ACCOUNT_PATH, _INSTANT, _json

log = logging.getLogger(__name__)
routes = web.RouteTableDef()

DONE_PATH = "/billing/done"
_DONE_PAGE = ("<!doctype html><html><head><meta charset=\"utf-8\"><title>creditq</title></head><body>"
              "<p>Thank you. You can close this page.</p></body></html>")


def _gateway(request: web.Request):
    return gateway_from_settings(request.app[SETTINGS])


async def _setup_session(request: web.Request, account_id: str):
    """A fresh setup page for the account's Customer; 503 when the gateway does not answer."""
    database, gateway = request.app[DATABASE], _gateway(request)
    done = request.app[SETTINGS].public_base_url + DONE_PATH

    def make():
        with database.read_only() as session:
            if session.get(Account, account_id) is None:
                raise NotFound(f"No account {account_id}.")
        customer = customer_of(database, gateway, account_id, now=datetime.now(UTC))
        return gateway.setup_session(customer=customer, account_id=account_id, success_url=done, cancel_url=done)

    try:
        return await asyncio.to_thread(make)
    except GatewayUnavailable as unavailable:
        raise Problem(503, "Payment gateway unavailable", f"{unavailable} Try again.") from None


@routes.post("/v1/accounts/{account_id}/payment-method/setup")
@action(BILLING)
@idempotent
async def create_setup(request: web.Request) -> web.Response:
    account_id = request.match_info["account_id"]
    require_access(request, account_id)
    session = await _setup_session(request, account_id)
    return web.json_response({"id": session.id, "url": session.url, "expires_at": session.expires_at.isoformat()},
                             status=201)


@routes.get("/v1/accounts/{account_id}/payment-method")
@action(BILLING)
async def get_payment_method(request: web.Request) -> web.Response:
    account_id = request.match_info["account_id"]
    require_access(request, account_id)
    database, gateway = request.app[DATABASE], _gateway(request)

    def read(database: Database):
        with database.read_only() as session:
            if session.get(Account, account_id) is None:
                raise NotFound(f"No account {account_id}.")
            method = payment_method_on_file(session, account_id)
        return gateway.card(method) if method else None

    try:
        card = await asyncio.to_thread(read, database)
    except GatewayUnavailable as unavailable:
        raise Problem(503, "Payment gateway unavailable", f"{unavailable} Try again.") from None
    fields = ("payment_method", "brand", "last4", "exp_month", "exp_year")
    return web.json_response({name: getattr(card, name) if card else None for name in fields})


@routes.get(payment_links.PATH + "{token}")
@action(PUBLIC)  # a customer's browser: the signed link is its key
async def follow_update_link(request: web.Request) -> web.Response:
    """The dunning link: a genuine, unexpired one opens a fresh setup page (303)."""
    account_id = payment_links.account_of(request.match_info["token"], now=datetime.now(UTC))
    if account_id is None:
        raise Problem(404, "Not Found", "This link is not valid or has expired; ask for a new one.")
    session = await _setup_session(request, account_id)
    raise web.HTTPSeeOther(session.url)


@routes.get(DONE_PATH)
@action(PUBLIC)  # the page a customer's browser lands on when the card is saved
async def done_page(request: web.Request) -> web.Response:
    """Where Stripe's pages send the customer back to."""
    return web.Response(text=_DONE_PAGE, content_type="text/html")


@routes.post("/webhooks/stripe")
@action(PUBLIC)  # verified by its Stripe-Signature
async def stripe_webhook(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS]
    try:
        event = verify_event(await read_body(request), request.headers.get("Stripe-Signature"),
                             settings.stripe_webhook_secret)
    except InvalidEvent as invalid:
        log.warning("rejected a Stripe webhook: %s", invalid)
        raise Problem(400, "Bad Request", "The Stripe-Signature does not verify for this payload.") from None
    database, gateway = request.app[DATABASE], _gateway(request)
    try:
        handled = await asyncio.to_thread(payment_events.handle_event, database, gateway, event, now=datetime.now(UTC))
    except GatewayUnavailable as unavailable:
        raise Problem(503, "Payment gateway unavailable", f"{unavailable} Stripe delivers the event again.") from None
    log.info("Stripe event %s %s: %s", event.get("type"), event.get("id"), handled.detail)
    if handled.retry_dunning_run is not None:
        try:
            await request.app[ENQUEUER].send("retry_dunning_payment", handled.retry_dunning_run)
        except Exception:  # handled and committed: the run's next step pays with the new card
            log.exception("could not enqueue retry_dunning_payment for %s; its next step will pay",
                          handled.retry_dunning_run)
    return web.json_response({"received": True})


_CARD = {"type": "object", "properties": {
    "payment_method": {"type": ["string", "null"], "description": "The saved PaymentMethod (`pm_...`); null: none."},
    "brand": {"type": ["string", "null"], "examples": ["visa"]},
    "last4": {"type": ["string", "null"], "examples": ["4242"]},
    "exp_month": {"type": ["integer", "null"]},
    "exp_year": {"type": ["integer", "null"]},
}}
_SESSION = {"type": "object", "properties": {
    "id": {"type": "string", "description": "The Checkout Session (`cs_...`)."},
    "url": {"type": "string", "format": "uri", "description": "Send the customer here to save a card."},
    "expires_at": _INSTANT,
}}
_HTML = {"content": {"text/html": {"schema": {"type": "string"}}}}

OPENAPI_PATHS = {
    "/v1/accounts/{account_id}/payment-method/setup": {"post": {
        "operationId": "createPaymentMethodSetup",
        "summary": "A page where the customer saves a new card",
        "description": ("A Stripe Checkout Session in setup mode for the account's Stripe Customer. When the customer "
                        "completes it, Stripe's webhook (`setup_intent.succeeded`, `checkout.session.completed`) "
                        "makes that card the card on file: auto-recharge's failures are forgotten and a recharge "
                        "disabled by declines resumes, and an unpaid dunning run is paid with it at once. Sessions "
                        "expire (24 hours): make a new one each time."),
        "parameters": [_ACCOUNT_PATH],
        "responses": {"201": {"description": "The page to send the customer to", **_json(_SESSION), "links": {
            "getPaymentMethod": {"operationId": "getPaymentMethod",
                                 "parameters": {"account_id": "$request.path.account_id"}}}},
                      "404": problem(404, "No such account"),
                      "503": problem(503, "Stripe did not answer; try again")},
    }},
    "/v1/accounts/{account_id}/payment-method": {"get": {
        "operationId": "getPaymentMethod",
        "summary": "The card on file",
        "description": "The card auto-recharge, month-end bills and dunning charge (all fields null when none).",
        "parameters": [_ACCOUNT_PATH],
        "responses": {"200": {"description": "The card on file", **_json(_CARD)},
                      "404": problem(404, "No such account"),
                      "503": problem(503, "Stripe did not answer; try again")},
    }},
    payment_links.PATH + "{token}": {"get": {
        "operationId": "followPaymentMethodLink",
        "summary": "The link in dunning emails and texts",
        "description": (f"Signed with CREDITQ_SECRET_KEY and valid {payment_links.LINK_TTL.days} days; not "
                        "guessable from the account id. Opens a fresh card setup page (303 to Stripe Checkout)."),
        "tags": ["pages"], "security": [],
        "parameters": [{"name": "token", "in": "path", "required": True, "schema": {"type": "string"}}],
        "responses": {"303": {"description": "To a new Stripe Checkout Session in setup mode"},
                      "404": problem(404, "Not a genuine link, or expired"),
                      "503": problem(503, "Stripe did not answer; try again")},
    }},
    DONE_PATH: {"get": {
        "operationId": "paymentPageDone", "summary": "Where Stripe's pages return the customer",
        "tags": ["pages"], "security": [], "responses": {"200": {"description": "A thank-you page", **_HTML}},
    }},
    "/webhooks/stripe": {"post": {
        "operationId": "receiveStripeEvent",
        "summary": "Stripe webhook events",
        "description": ("Verified with `stripe.Webhook.construct_event` (Stripe-Signature under STRIPE_WEBHOOK_SECRET, "
                        "at most 300 s old), else 400 and nothing changes. Handled once per event id: a replay is "
                        "answered 200 and ignored. `payment_intent.*` records the payment's outcome as its "
                        "PaymentIntent stands now (credits land once on success); `charge.refunded` takes back the "
                        "credits pro rata, `charge.dispute.created` what is left of them, `charge.dispute.closed` "
                        "(won) gives them back; `setup_intent.succeeded` and `checkout.session.completed` store "
                        "the new card on file."),
        "tags": ["webhooks"], "security": [],
        "parameters": [{"name": "Stripe-Signature", "in": "header", "required": False, "schema": {"type": "string"}}],
        "requestBody": {"required": True, "content": {"application/json": {"schema": {"type": "object"}}}},
        "responses": {"200": {"description": "Handled (or ignored as a replay)", **_json(
            {"type": "object", "properties": {"received": {"type": "boolean"}}})},
                      "400": problem(400, "Forged, stale or unreadable"),
                      "503": problem(503, "Stripe did not answer a read-back; Stripe delivers it again")},
    }},
}
