"""POST /v1/accounts/{id}/purchases: buy a bucket of credits; they land only when the payment succeeds. GET lists
them, and /payments every payment of the account (purchases, bills, dunning)."""

import asyncio
from datetime import UTC, datetime

from aiohttp import web

from shared.billing.gateways import gateway_from_settings
from shared.billing.purchases import (
    SOURCES,
    STATUSES,
    PaymentDeclined,
    PaymentUnavailable,
    find_payments,
    purchase,
)
from shared.db import Database
from shared.ledger.accounts import get_account
from shared.ledger.expiry import utc
from shared.models import Payment
from shared.money import format_credits

from ..appkeys import DATABASE, PRINCIPAL, SETTINGS
from ..auth import require_access
from ..bodies import json_response, query_limit, read_json
from ..cursors import decode_cursor, page_of
from ..errors import Problem
from ..fields import Fields, QueryFilters, refuse_unknown
from ..idempotency import idempotent
from ..openapi import CREATED_RANGE, list_operation, problem, query_filter
from ..policy import BILLING, action
from .accounts import _ACCOUNT_PATH, _CREDITS, _INSTANT, _json
from .payment_method import DONE_PATH

routes = web.RouteTableDef()
PURCHASE_FIELDS = frozenset({"credits", "payment_method"})


@routes.post("/v1/accounts/{account_id}/purchases")
@action(BILLING)
@idempotent
async def create_purchase(request: web.Request) -> web.Response:
    account_id = request.match_info["account_id"]
    require_access(request, account_id)
    body = await read_json(request)
    refuse_unknown(body, PURCHASE_FIELDS)  # an `amount_cents` or `currency` would otherwise be dropped unseen
    amount = Fields({"credits": body.get("credits")})  # the amount is checked here, the card by purchase()
    credits = amount.credits("credits", required=True)
    amount.done()
    key = request.headers.get("Idempotency-Key")
    scoped_key = f"api:{request[PRINCIPAL].name}:{account_id}:{key}" if key else None
    settings = request.app[SETTINGS]
    try:
        payment = await asyncio.to_thread(purchase, request.app[DATABASE], gateway_from_settings(settings),
                                          account_id, credits, body.get("payment_method"), idempotency_key=scoped_key,
                                          now=datetime.now(UTC), return_url=settings.public_base_url + DONE_PATH)
    except PaymentDeclined as declined:
        raise Problem(402, "Payment declined", str(declined), decline_code=declined.payment.decline_code,
                      payment=payment_json(declined.payment)) from None
    except PaymentUnavailable as unavailable:
        paid = unavailable.payment
        retry = ("Retry with the same Idempotency-Key." if key else
                 "Retry (send an Idempotency-Key so a retry never charges twice).")
        raise Problem(503, "Payment gateway unavailable", f"{unavailable} {retry}",
                      decline_code=paid.decline_code if paid else None,
                      payment=payment_json(paid) if paid else None) from None
    return json_response(payment_json(payment), status=201 if payment.status == "succeeded" else 202)


@routes.get(r"/v1/accounts/{account_id}/{listed:purchases|payments}")
@action(BILLING)
async def list_payments(request: web.Request) -> web.Response:
    account_id = request.match_info["account_id"]
    require_access(request, account_id)
    limit = query_limit(request)
    before_id = decode_cursor(request, text_ids=True)
    filters = QueryFilters(request.query)
    wanted = {"status": filters.choice("status", STATUSES), "source": filters.choice("source", SOURCES),
              "created_after": filters.instant("created_after"), "created_before": filters.instant("created_before")}
    filters.done()
    purchases_only = request.match_info["listed"] == "purchases"

    def read(database: Database) -> dict:
        with database.read_only() as session:
            get_account(session, account_id)
            rows = find_payments(session, account_id, purchases_only=purchases_only, limit=limit + 1,
                                 before_id=before_id, **wanted)
            return page_of(request, rows, limit, payment_json)

    return json_response(await asyncio.to_thread(read, request.app[DATABASE]))


def payment_json(payment: Payment) -> dict:
    return {
        "id": payment.id,
        "status": payment.status,
        "credits": format_credits(payment.credits),
        "amount_cents": payment.amount_cents,
        "currency": payment.currency,
        "payment_method": payment.payment_method,
        "intent_id": payment.intent_id,
        "action_url": payment.action_url,
        "charge_id": payment.charge_id,
        "decline_code": payment.decline_code,
        "failure_message": payment.failure_message,
        "lot_id": payment.lot_id,
        "refunded_cents": payment.refunded_cents or 0,
        "source": payment.source,
        "created_at": utc(payment.created_at).isoformat(),
    }


PAYMENT_METHOD = {"type": "string", "pattern": "^(pm|tok|card)_[A-Za-z0-9_]+$", "maxLength": 100,
                  "examples": ["pm_card_visa"],
                  "description": "A payment gateway token (pm_..., tok_... or card_...). Anything else, a card number "
                                 "above all, is refused with 422 without being stored or repeated."}

PAYMENT_SCHEMA = {"type": "object", "properties": {
    "id": {"type": "string"},
    "status": {"type": "string", "enum": list(STATUSES),
               "description": ("The payment's life: pending (opened), processing (its Stripe PaymentIntent exists), "
                               "then succeeded, declined, error (nothing taken), requires_action (3-D Secure: "
                               "send the customer to `action_url`; the credits land when Stripe's webhook says it "
                               "succeeded; unfinished for a day, it is canceled at Stripe and ends error with "
                               "`decline_code` `abandoned`), refunded (in part or whole: `refunded_cents`) or "
                               "disputed.")},
    "credits": {**_CREDITS, "description": "Credits bought; 0 for a payment of an amount due."},
    "amount_cents": {"type": "integer", "description": "The price charged, in the currency's cents."},
    "currency": {"type": "string", "examples": ["usd"]},
    "payment_method": {"type": "string"},
    "intent_id": {"type": ["string", "null"], "description": "The Stripe PaymentIntent (`pi_...`)."},
    "action_url": {"type": ["string", "null"], "description": "requires_action: where the customer authenticates."},
    "charge_id": {"type": ["string", "null"]},
    "decline_code": {"type": ["string", "null"], "examples": ["insufficient_funds"]},
    "failure_message": {"type": ["string", "null"]},
    "lot_id": {"type": ["integer", "null"], "description": "The purchased lot, once the payment succeeded."},
    "refunded_cents": {"type": "integer", "description": "Refunded so far; the credits are taken back pro rata."},
    "source": {"type": "string", "enum": list(SOURCES)},
    "created_at": _INSTANT,
}}

# What a request looks like: the document's examples (clients copy them, the contract tests send them).
_PURCHASE_EXAMPLE = {"credits": "100", "payment_method": "pm_card_visa"}

_PAYMENT_FILTERS = [
    query_filter("status", "Where the payment is.", {"type": "string", "enum": list(STATUSES)}),
    query_filter("source", "api: bought through the API; auto_recharge; dunning: a retry of an unpaid amount.",
                 {"type": "string", "enum": list(SOURCES)}),
    *CREATED_RANGE]

OPENAPI_PATHS = {
    "/v1/accounts/{account_id}/payments": {"parameters": [_ACCOUNT_PATH], "get": list_operation(
        "listPayments", "Every payment of the account: purchases, auto-recharges, bills and dunning retries",
        PAYMENT_SCHEMA, filters=_PAYMENT_FILTERS)},
    "/v1/accounts/{account_id}/purchases": {
        "parameters": [_ACCOUNT_PATH],
        "get": list_operation("listPurchases", "The account's credit purchases (payments that buy credits)",
                              PAYMENT_SCHEMA, filters=_PAYMENT_FILTERS),
        "post": {
            "operationId": "createPurchase",
            "summary": "Buy a bucket of credits",
            "description": ("Charges the payment method for one of the plan's credit buckets (shared/billing/price_list.json) "
                            "and grants `purchase` credits (they never expire) only when the payment succeeds. "
                            "It is a Stripe PaymentIntent on the account's Stripe Customer, created with an idempotency "
                            "key derived from the payment's id and then confirmed. A card that asks for 3-D Secure "
                            "answers 202 `requires_action` with `action_url`; left unfinished for a day, it is "
                            "canceled at Stripe and ends `error` with `decline_code` `abandoned`, having taken "
                            "nothing (the same Idempotency-Key then starts a new attempt, as after any `error`). "
                            "Send an Idempotency-Key: a retry never charges twice."),
            "parameters": [_ACCOUNT_PATH],
            "requestBody": {"required": True, **_json({"type": "object", "examples": [_PURCHASE_EXAMPLE],
                                                       "required": ["credits", "payment_method"],
                                                       "additionalProperties": False,
                                                        "properties": {
                "credits": {**_CREDITS, "description": "One of the plan's buckets, e.g. \"500\"."},
                "payment_method": PAYMENT_METHOD}})},
            "responses": {
                "201": {"description": "Paid; the credits are in the balance", **_json(PAYMENT_SCHEMA)},
                "202": {"description": ("Not decided yet: `requires_action` (3-D Secure at `action_url`; canceled "
                                        "if unfinished for a day) or `processing`; the credits land when Stripe's "
                                        "webhook says it succeeded"),
                        **_json(PAYMENT_SCHEMA)},
                "402": problem(402, "Declined: `decline_code` (Stripe's) and `payment` say why; no credits"),
                "404": problem(404, "No such account"),
                "409": problem(409, "Idempotency key reused, or the account cannot buy (spam)"),
                "422": problem(422, "Not a bucket of the plan, or no payment method, or one that is not a gateway "
                                    "token (a card number), or a payment method saved by another account"),
                "503": problem(503, "The gateway could not process it, or did not answer; retry with the same "
                                    "Idempotency-Key (never a second charge)"),
            },
        },
    },
}
