"""An account's balance (lots, users, what expires this month) and its transactions, newest first."""

import asyncio
from datetime import datetime, timezone

from aiohttp import web

from shared.db import Database
from shared.ids import CALL_REFERENCE
from shared.ledger import book
from shared.ledger.accounts import get_account
from shared.ledger.expiry import utc
from shared.messaging.messages import rate_card_versions
from shared.money import format_credits
from shared.voice.calls import MINUTES_ENTRY_SUFFIXES, call_minutes

from ..appkeys import DATABASE, PRINCIPAL
from ..auth import require_access
from ..bodies import json_response, query_limit
from ..cursors import decode_cursor, page_of
from ..fields import QueryFilters
from ..openapi import list_operation, problem, query_filter
from ..policy import READ_ACCOUNT, READ_ACTIVITY, action
from .accounts import _ACCOUNT_PATH, _CREDITS, _INSTANT, _SIGNED_CREDITS, LOT_SCHEMA, _json, lot_json
from .users import USER_CREDITS_SCHEMA, user_credits_json

routes = web.RouteTableDef()


@routes.get("/v1/accounts/{account_id}/balance")
@action(READ_ACCOUNT)
async def get_balance(request: web.Request) -> web.Response:
    account_id = request.match_info["account_id"]
    require_access(request, account_id)
    now = datetime.now(timezone.utc)
    own_only = request[PRINCIPAL].own_only  # a user's key: its own wallet and the pool, not its colleagues'

    def read(database: Database) -> dict:
        with database.read_only() as session:
            view = book.balance(session, account_id, now=now)
        return {
            "balance": format_credits(view.balance),
            "held": format_credits(view.held),
            "available": format_credits(view.available),
            "pool_available": format_credits(view.pool_available),
            "status": view.status,
            "expiring_end_of_month": format_credits(view.expiring_end_of_month),
            "lots": [lot_json(lot) for lot in view.lots if own_only is None or lot.user_id in (None, own_only)],
            "users": [user_credits_json(user) for user in view.users if own_only is None or user.id == own_only],
        }

    return json_response(await asyncio.to_thread(read, request.app[DATABASE]))


@routes.get("/v1/accounts/{account_id}/transactions")
@action(READ_ACTIVITY)
async def list_transactions(request: web.Request) -> web.Response:
    account_id = request.match_info["account_id"]
    own_only = require_access(request, account_id).own_only
    limit = query_limit(request)
    before_id = decode_cursor(request)
    filters = QueryFilters(request.query)
    kind = filters.choice("kind", ENTRY_KINDS)
    filters.done()

    def read(database: Database) -> dict:
        with database.read_only() as session:
            get_account(session, account_id)
            rows = book.transactions(session, account_id, limit=limit + 1, before_id=before_id, user_id=own_only,
                                     kind="usage" if kind == "call" else kind,
                                     reference_prefix=CALL_REFERENCE if kind == "call" else None)
            minutes = call_minutes(session, [row.reference for row in rows[:limit] if _of_a_call(row)])
            versions = rate_card_versions(session, [row.reference for row in rows[:limit] if _of_a_text(row)])
        return page_of(request, rows, limit, lambda row: _entry_json(row, minutes, versions))

    return json_response(await asyncio.to_thread(read, request.app[DATABASE]))


def _of_a_call(row) -> bool:
    return row.kind == "usage" and (row.reference or "").startswith(CALL_REFERENCE)


def _of_a_text(row) -> bool:
    return row.kind in ("usage", "carrier_fee") and row.reference is not None and not _of_a_call(row)


def _entry_json(row, minutes: dict[str, int | None], versions: dict[str, int | None]) -> dict:
    """A call's usage is shown as kind `call`, with the minutes it charged (its minutes entry only: not a
    voicemail's or a transcription's); a text's usage and carrier fee with the rate card version that priced it."""
    shown = {"id": str(row.id), "at": utc(row.at).isoformat(), "kind": row.kind,
             "credits": format_credits(row.amount), "balance_after": format_credits(row.balance_after),
             "reference": row.reference, "user_id": row.user_id, "memo": row.memo,
             "rate_card_version": versions.get(row.reference) if _of_a_text(row) else None}
    if _of_a_call(row):
        shown["kind"] = "call"
        shown["minutes"] = minutes.get(row.reference) if row.idempotency_key.endswith(MINUTES_ENTRY_SUFFIXES) else None
    return shown


ENTRY_KINDS = ("grant", "purchase", "usage", "call", "carrier_fee", "refund", "expiry", "allocation",
               "month_end_charge", "reset", "adjustment", "dispute")
ENTRY_SCHEMA = {"type": "object", "properties": {
    "id": {"type": "string"}, "at": _INSTANT,
    "kind": {"type": "string", "enum": list(ENTRY_KINDS),
             "description": "refund and dispute: credits taken back when a payment is refunded or disputed at Stripe. "
                            "call: what a call cost (its reference is the call's id)."},
    "minutes": {"type": ["integer", "null"], "description": "A call's entry for its minutes: the minutes billed."},
    "rate_card_version": {"type": ["integer", "null"], "description": (
        "A text's usage and carrier fee entries: the rate card version it was priced with (null for any other entry, "
        "a toll-free resend, or a text settled before a version was loaded).")},
    "credits": {**_SIGNED_CREDITS, "description": "Signed: what this entry added to the balance."},
    "balance_after": {**_SIGNED_CREDITS, "description": "The account's balance right after this entry."},
    "reference": {"type": ["string", "null"], "description": "Message, campaign or invoice."},
    "user_id": {"type": ["string", "null"]}, "memo": {"type": ["string", "null"]},
}}

OPENAPI_PATHS = {
    "/v1/accounts/{account_id}/balance": {"parameters": [_ACCOUNT_PATH], "get": {
        "operationId": "getBalance",
        "summary": "Balance, held and available credits, open lots in burn order, users' credits",
        "responses": {"200": {"description": "the balance", **_json({"type": "object", "properties": {
            "balance": _SIGNED_CREDITS, "held": _CREDITS, "available": _SIGNED_CREDITS,
            "pool_available": {**_SIGNED_CREDITS, "description": "What owners and admins can still spend."},
            "status": {"type": "string"},
            "expiring_end_of_month": {**_CREDITS, "description": "Credits that expire before this local month ends."},
            "lots": {"type": "array", "items": LOT_SCHEMA},
            "users": {"type": "array", "items": USER_CREDITS_SCHEMA}}})},
            "404": problem(404, "no such account")},
    }},
    "/v1/accounts/{account_id}/transactions": {"parameters": [_ACCOUNT_PATH], "get": list_operation(
        "listTransactions", "Ledger entries, newest first (to a role-`user` key: that user's own only)", ENTRY_SCHEMA,
        filters=[query_filter("kind", "Only entries of this kind.", {"type": "string", "enum": list(ENTRY_KINDS)})])},
}
