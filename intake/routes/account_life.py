"""An account's life (operator): cancel, reactivate, mark spam; and its history of changes (GET .../events).

The three actions are the operator's alone (intake.policy.ACCOUNT_LIFE): to an account or user key, even for its
own account, they do not exist (404), so the key learns nothing.
"""

import asyncio

from aiohttp import web

from shared.db import Database
from shared.ledger import account_events, accounts
from shared.ledger.expiry import utc
from shared.lifecycle import account_life
from shared.models import AccountEvent
from shared.money import format_credits

from ..appkeys import CLOCK, DATABASE, KEY_CACHE, PRINCIPAL
from ..auth import require_access
from ..bodies import json_response, query_limit, read_body, read_json
from ..cursors import decode_cursor, page_of
from ..fields import Fields, QueryFilters
from ..idempotency import idempotent
from ..openapi import list_operation, problem
from ..policy import ACCOUNT_LIFE, READ_ACCOUNT, action
from .accounts import _ACCOUNT_PATH, _INSTANT, _PLAN, ACCOUNT_SCHEMA, _json, _plan, account_json

routes = web.RouteTableDef()


@routes.post("/v1/accounts/{account_id}/cancel")
@action(ACCOUNT_LIFE)
async def cancel_account(request: web.Request) -> web.Response:
    account_id = request.match_info["account_id"]
    fields = Fields(await read_json(request) if await read_body(request) else {})
    reason = fields.text("reason", max_length=account_life.REASON_MAX_LENGTH) or account_life.CANCELED_BY_OPERATOR
    fields.done()
    return await _end(request, account_id, lambda session, now: account_life.cancel_account(
        session, account_id, actor=request[PRINCIPAL].name, now=now, reason=reason))


@routes.post("/v1/accounts/{account_id}/mark-spam")
@action(ACCOUNT_LIFE)
async def mark_spam(request: web.Request) -> web.Response:
    account_id = request.match_info["account_id"]
    # no fields: a typo is refused, not lost
    Fields(await read_json(request) if await read_body(request) else {}).done()
    return await _end(request, account_id, lambda session, now: account_life.mark_spam(
        session, account_id, actor=request[PRINCIPAL].name, now=now))


async def _end(request: web.Request, account_id: str, action) -> web.Response:
    now = request.app[CLOCK]()

    def apply(database: Database) -> tuple[dict, list[int]]:
        with database.unit_of_work() as session:
            canceled = action(session, now)
            return account_json(session, canceled.account, now=now), canceled.revoked_key_ids

    body, revoked = await asyncio.to_thread(apply, request.app[DATABASE])
    for key_id in revoked:  # this process at once; the others within the key cache's TTL
        request.app[KEY_CACHE].forget_key(key_id)
    return json_response(body)


@routes.post("/v1/accounts/{account_id}/reactivate")
@action(ACCOUNT_LIFE)
@idempotent
async def reactivate_account(request: web.Request) -> web.Response:
    account_id = request.match_info["account_id"]
    fields = Fields(await read_json(request))
    plan = fields.obj("plan", required=True)
    monthly, cycle, rollover = _plan(plan)
    if plan is not None and monthly is None:  # a reactivation names its plan's credits, even "0", never by default
        plan.fail("monthly_credits", "is required")
    fields.done(plan)
    now = request.app[CLOCK]()

    def apply(database: Database) -> dict:
        with database.unit_of_work() as session:
            account, api_key = account_life.reactivate_account(
                session, account_id, plan_monthly_credits=monthly or 0, plan_cycle=cycle or "monthly",
                plan_rollover=rollover or "none", actor=request[PRINCIPAL].name, now=now)
            return {"api_key": api_key, **account_json(session, account, now=now)}

    return json_response(await asyncio.to_thread(apply, request.app[DATABASE]))


@routes.get("/v1/accounts/{account_id}/events")
@action(READ_ACCOUNT)
async def list_events(request: web.Request) -> web.Response:
    account_id = request.match_info["account_id"]
    require_access(request, account_id)
    limit = query_limit(request)
    before_id = decode_cursor(request)
    QueryFilters(request.query).done()  # it takes none: a typo is refused, not lost

    def read(database: Database) -> dict:
        with database.read_only() as session:
            accounts.get_account(session, account_id)
            rows = account_events.list_events(session, account_id, limit=limit + 1, before_id=before_id)
            return page_of(request, rows, limit, event_json)

    return json_response(await asyncio.to_thread(read, request.app[DATABASE]))


# What an event's detail keeps in millicredits (shared.ledger.accounts, shared.lifecycle.account_life).
_DETAIL_CREDITS = frozenset({"monthly_credits", "limit", "credits_expired", "never_expiring_removed"})


def event_json(event: AccountEvent) -> dict:
    return {"id": str(event.id), "at": utc(event.at).isoformat(), "action": event.action,
            "actor": event.actor, "detail": _detail_json(event.detail)}


def _detail_json(detail: dict) -> dict:
    """The detail as stored, its credits as decimal strings like every other amount the API shows."""
    return {name: _detail_json(value) if isinstance(value, dict)
            else format_credits(value) if name in _DETAIL_CREDITS and isinstance(value, int)
            and not isinstance(value, bool) else value
            for name, value in detail.items()}


EVENT_SCHEMA = {"type": "object", "properties": {
    "id": {"type": "string"}, "at": _INSTANT,
    "action": {"type": "string", "enum": ["cancel", "reactivate", "mark_spam", "update"]},
    "actor": {"type": "string", "description": "operator, or the account id of the key that made the change."},
    "detail": {"type": "object", "description": "What changed; its credits (`plan.monthly_credits`, "
                                                "`overdraft.limit`, `credits_expired`, `never_expiring_removed`) "
                                                "are decimal strings."},
}}
_OPERATOR_ONLY = problem(404, "no such account, or an account key (these routes are the operator's)")


def _action(operation_id: str, summary: str, description: str, *, body: dict | None = None,
            answer: dict = ACCOUNT_SCHEMA, extra: dict | None = None, parameters: list | None = None) -> dict:
    operation = {
        "operationId": operation_id, "summary": summary, "description": description,
        "responses": {"200": {"description": "the account", **_json(answer)},
                      "401": problem(401, "no key, or an unknown or revoked one"), "404": _OPERATOR_ONLY,
                      "429": problem(429, "the account's request rate limit (Retry-After)"), **(extra or {})},
    }
    if body is not None:
        operation["requestBody"] = body
    if parameters:
        operation["parameters"] = parameters
    return operation


OPENAPI_PATHS = {
    "/v1/accounts/{account_id}/cancel": {"parameters": [_ACCOUNT_PATH], "post": _action(
        "cancelAccount", "Cancel an account (operator): it stops sending; canceling again changes nothing",
        "No more holds (sends answer 423 with the reason); messages Twilio never had end canceled, uncharged; "
        "messages with Twilio settle as usual; campaigns and drips are canceled; plan and rollover credits "
        "expire at once but for what those in-flight messages still need; purchased and bonus credits stay; "
        "numbers are released (no fee, no sending from them; inbound texts still land); every API key is "
        "revoked; debt is billed at month-end as usual.",
        body={"required": False, **_json({"type": "object", "additionalProperties": False, "properties": {
            "reason": {"type": "string", "maxLength": account_life.REASON_MAX_LENGTH,
                       "description": "The account's status_reason."}}})},
        extra={"400": problem(400, "the body is not a JSON object"), "422": problem(422, "invalid reason")})},
    "/v1/accounts/{account_id}/mark-spam": {"parameters": [_ACCOUNT_PATH], "post": _action(
        "markAccountAsSpam", "Flag an account as spam (operator) and cancel it",
        "Sets flags.spam, which removes the never-expiring credits (an adjustment entry per lot) but for what "
        "messages with Twilio hold (paid from it, and what they leave expires as they settle), and cancels the "
        "account as POST .../cancel does. Marking a spam account again changes nothing.",
        body={"required": False, **_json({"type": "object", "additionalProperties": False, "properties": {}})},
        extra={"400": problem(400, "the body is not a JSON object"), "422": problem(422, "a field it does not take")})},
    "/v1/accounts/{account_id}/reactivate": {"parameters": [_ACCOUNT_PATH], "post": _action(
        "reactivateAccount", "Reactivate a canceled account (operator) on a plan, with a new API key",
        "Only a canceled account (409 otherwise), on the plan given (monthly_credits required; \"0\" for none). "
        "Its cycles restart now: the first cycle's plan credits are granted in full and expire when that cycle "
        "ends. Its kept purchased and bonus credits are spendable again; its numbers stay released until added "
        "again. The answer carries a new owner key, shown only here.",
        body={"required": True, **_json({"type": "object", "required": ["plan"], "additionalProperties": False,
                                         "examples": [{"plan": {"monthly_credits": "500", "cycle": "monthly",
                                                                "rollover": "none"}}],
                                         "properties": {"plan": {**_PLAN, "required": ["monthly_credits"]}}})},
        answer={**ACCOUNT_SCHEMA, "properties": {**ACCOUNT_SCHEMA["properties"], "api_key": {"type": "string"}}},
        extra={"400": problem(400, "the body is not a JSON object, or a malformed Idempotency-Key"),
               "409": problem(409, "the account is not canceled, or the Idempotency-Key was reused"),
               "422": problem(422, "invalid plan")},
        parameters=[{"name": "Idempotency-Key", "in": "header", "schema": {"type": "string", "maxLength": 200},
                     "description": "The same key and body answer the first response (and key) again."}])},
    "/v1/accounts/{account_id}/events": {"parameters": [_ACCOUNT_PATH], "get": list_operation(
        "listAccountEvents", "The account's changes (cancel, reactivate, mark spam, plan, overdraft, flags), newest "
        "first", EVENT_SCHEMA, filters=[])},
}
