"""Accounts (operator): create with an API key, read, change plan/overdraft/flags/threshold, grant credits."""

import asyncio
import logging
from datetime import datetime, timezone

from aiohttp import web
from sqlalchemy.orm import Session

from shared.db import Database
from shared.errors import ValidationFailed
from shared.ids import new_id
from shared.ledger import accounts, book
from shared.ledger.burn_order import KINDS
from shared.ledger.expiry import CYCLE_MONTHS, utc
from shared.messaging import parking, shared_short_code
from shared.messaging.reprocessing import set_toll_free_reprocessing
from shared.messaging.send_policy import SCOPES, account_window, set_quiet_hours
from shared.models import Account
from shared.money import format_credits
from shared.voice.calls import MAX_CALL_MINUTES
from shared.voice.inbound import set_call_minutes

from ..appkeys import DATABASE, ENQUEUER, PRINCIPAL, SETTINGS
from ..auth import require_access
from ..bodies import json_response, query_limit, read_json
from ..cursors import decode_cursor, page_of
from ..errors import Problem
from ..fields import Fields, QueryFilters
from ..idempotency import idempotent
from ..openapi import list_operation, problem, query_filter
from ..policy import BILLING, OPERATE, READ_ACCOUNT, action

log = logging.getLogger(__name__)

RELEASE_ACTOR = "release_parked"  # the workers' actor that sends an account's parked messages again

routes = web.RouteTableDef()


@routes.post("/v1/accounts")
@action(OPERATE)
@idempotent
async def create_account(request: web.Request) -> web.Response:
    fields = Fields(await read_json(request))
    name = fields.text("name", required=True)
    tz = fields.text("timezone", max_length=64) or "UTC"
    plan = fields.obj("plan")
    monthly, cycle, rollover = _plan(plan)
    overdraft_fields = fields.obj("overdraft")
    overdraft = _overdraft(overdraft_fields) or accounts.Overdraft("prepaid")
    threshold = fields.credits("low_balance_threshold") or 0
    fields.done(plan, overdraft_fields)

    def create(database: Database) -> dict:
        with database.unit_of_work() as session:
            account, api_key = accounts.create_account(
                session, name=name, timezone=tz, plan_monthly_credits=monthly or 0, plan_cycle=cycle or "monthly",
                plan_rollover=rollover or "none", overdraft=overdraft, low_balance_threshold=threshold,
                now=datetime.now(timezone.utc))
            return {"id": account.id, "api_key": api_key, **account_json(session, account, now=account.created_at)}

    return json_response(await asyncio.to_thread(create, request.app[DATABASE]), status=201)


@routes.get("/v1/accounts")
@action(OPERATE)
async def list_accounts(request: web.Request) -> web.Response:
    limit = query_limit(request)
    before_id = decode_cursor(request, text_ids=True)
    filters = QueryFilters(request.query)
    wanted = {"name": filters.text("q"), "status": filters.choice("status", accounts.STATUSES),
              "locked": filters.flag("locked"), "negative": filters.flag("negative")}
    filters.done()
    now = datetime.now(timezone.utc)

    def read(database: Database) -> dict:
        with database.read_only() as session:
            rows = accounts.find_accounts(session, limit=limit + 1, before_id=before_id, **wanted)
            return page_of(request, rows, limit, lambda account: account_json(session, account, now=now))

    return json_response(await asyncio.to_thread(read, request.app[DATABASE]))


@routes.get("/v1/accounts/{account_id}")
@action(READ_ACCOUNT)
async def get_account(request: web.Request) -> web.Response:
    account_id = request.match_info["account_id"]
    require_access(request, account_id)

    def read(database: Database) -> dict:
        with database.read_only() as session:
            return account_json(session, accounts.get_account(session, account_id), now=datetime.now(timezone.utc))

    return json_response(await asyncio.to_thread(read, request.app[DATABASE]))


# What an owner may change (intake.policy.BILLING); the rest is the operator's.
OWNER_FIELDS = ("low_balance_threshold", "quiet_hours", "quiet_hours_scope", "settings")


@routes.patch("/v1/accounts/{account_id}")
@action(BILLING)
async def patch_account(request: web.Request) -> web.Response:
    account_id = request.match_info["account_id"]
    principal = require_access(request, account_id)
    body = await read_json(request)
    if not principal.is_operator and isinstance(body, dict) and set(body) - set(OWNER_FIELDS):
        raise Problem(403, "Forbidden", f"An account key may change only {', '.join(OWNER_FIELDS)}; "
                                        "the rest is the operator's.")
    fields = Fields(body)
    name = fields.text("name")
    plan = fields.obj("plan")
    monthly, cycle, rollover = _plan(plan)
    overdraft_fields = fields.obj("overdraft")
    overdraft = _overdraft(overdraft_fields)
    threshold = fields.credits("low_balance_threshold")
    flag_fields = fields.obj("flags")
    flags = {}
    if flag_fields is not None:
        flags = {flag: value for flag in accounts.FLAGS if (value := flag_fields.boolean(flag)) is not None}
    settings_fields = fields.obj("settings")
    # API.md puts quiet hours under `settings`; the top-level fields came first and stay accepted
    where = settings_fields if settings_fields is not None and {"quiet_hours", "quiet_hours_scope"} & set(
        settings_fields.body) else fields
    scope = where.choice("quiet_hours_scope", SCOPES)
    window = where.window("quiet_hours")
    clear_window = "quiet_hours" in where.body and where.body["quiet_hours"] is None  # null: the TCPA default
    bounds = tuple(where.body["quiet_hours"]) if window is not None else ()  # a bound left out stays as it is
    toll_free_reprocessing = None if settings_fields is None else settings_fields.boolean("toll_free_reprocessing")
    short_code = None if settings_fields is None else settings_fields.obj("shared_short_code")
    keyword = _keyword(short_code)
    release_keyword = settings_fields is not None and settings_fields.body.get("shared_short_code", False) is None
    call_minutes = {} if settings_fields is None else {
        name: value for name in ("call_max_minutes", "inbound_grace_minutes")
        if (value := settings_fields.integer(name, minimum=0 if name == "inbound_grace_minutes" else 1,
                                             maximum=MAX_CALL_MINUTES)) is not None}
    fields.done(plan, overdraft_fields, flag_fields, settings_fields, short_code)
    now = datetime.now(timezone.utc)
    code = request.app[SETTINGS].shared_short_code

    def patch(database: Database) -> dict:
        with database.unit_of_work() as session:
            account = accounts.update_account(
                session, account_id, now=now, name=name, plan_monthly_credits=monthly, plan_cycle=cycle,
                plan_rollover=rollover, overdraft=overdraft, low_balance_threshold=threshold, flags=flags,
                actor=principal.name)
            if window is not None or clear_window or scope is not None:
                account = set_quiet_hours(session, account_id, window=window, scope=scope, clear=clear_window,
                                          bounds=bounds)
            if toll_free_reprocessing is not None:
                account = set_toll_free_reprocessing(session, account_id, enabled=toll_free_reprocessing)
            if keyword is not None or release_keyword:
                account = shared_short_code.set_keyword(session, account_id, keyword, code=code)
            if call_minutes:
                account = set_call_minutes(session, account_id, **call_minutes)
            return account_json(session, account, now=now)

    return json_response(await asyncio.to_thread(patch, request.app[DATABASE]))


@routes.post("/v1/accounts/{account_id}/grants")
@action(OPERATE)
@idempotent
async def create_grant(request: web.Request) -> web.Response:
    account_id = request.match_info["account_id"]
    require_access(request, account_id)
    body = await read_json(request)
    fields = Fields(body)
    amount = fields.credits("credits", required=True)
    kind = fields.choice("kind", KINDS, required=True)
    granted_at = fields.instant("granted_at") or datetime.now(timezone.utc)
    expires_at = fields.instant("expires_at")
    never_expires = "expires_at" in body and body["expires_at"] is None
    user_id = fields.text("user_id", max_length=40)
    priority = fields.integer("priority", minimum=0, maximum=1000)
    reference = fields.text("reference", max_length=100)
    fields.done()
    if amount == 0:
        fields.fail("credits", "must be more than zero")
        fields.done()
    header_key = request.headers.get("Idempotency-Key")
    key = f"grant:{request[PRINCIPAL].name}:{header_key}" if header_key else new_id("grant")

    def give(database: Database) -> tuple[dict, bool]:
        with database.unit_of_work() as session:
            lot = book.grant(session, account_id, amount, kind, granted_at=granted_at,
                               expires_at=None if never_expires else expires_at or book.DEFAULT_EXPIRY,
                               user_id=user_id, priority=priority, reference=reference, idempotency_key=key)
            return lot_json(lot), parking.has_releasable(session, account_id)

    lot, release = await asyncio.to_thread(give, request.app[DATABASE])
    if release:  # the grant may have unlocked the account: its parked messages go out now
        try:
            await request.app[ENQUEUER].send(RELEASE_ACTOR, account_id)
        except Exception:
            log.exception("could not enqueue %s for %s; the sweeper will release them", RELEASE_ACTOR, account_id)
    return json_response(lot, status=201)


def _plan(plan: Fields | None) -> tuple[int | None, str | None, str | None]:
    if plan is None:
        return None, None, None
    return (plan.credits("monthly_credits"), plan.choice("cycle", tuple(CYCLE_MONTHS)),
            plan.choice("rollover", accounts.ROLLOVER_POLICIES))


def _keyword(setting: Fields | None) -> str | None:
    """settings.shared_short_code.keyword, in capitals; None when absent or invalid (then an error is recorded)."""
    if setting is None:
        return None
    raw = setting.text("keyword", required=True, max_length=100)
    if raw is None:
        return None
    try:
        return shared_short_code.parse_keyword(raw)
    except ValidationFailed as error:
        setting.fail("keyword", error.errors[shared_short_code.FIELD])
        return None


def _overdraft(overdraft: Fields | None) -> accounts.Overdraft | None:
    if overdraft is None:
        return None
    policy = overdraft.choice("policy", accounts.OVERDRAFT_POLICIES, required=True)
    limit = overdraft.credits("limit") or 0
    return accounts.Overdraft(policy or "prepaid", limit)


def account_json(session: Session, account: Account, *, now: datetime) -> dict:
    """The account as the API shows it; its balance never counts credits that expired by `now`."""
    expired = sum(book.lapsed(session, account.id, now=now).values())
    return {
        "id": account.id,
        "name": account.name,
        "status": account.status,
        "status_reason": account.status_reason,
        "timezone": account.timezone,
        "plan": {
            "monthly_credits": format_credits(account.plan_monthly_credits),
            "cycle": account.plan_cycle,
            "rollover": account.plan_rollover,
            "next_monthly_credits": None if account.next_plan_monthly_credits is None
            else format_credits(account.next_plan_monthly_credits),
        },
        "overdraft": {"policy": account.overdraft_policy, "limit": format_credits(account.overdraft_limit)},
        "low_balance_threshold": format_credits(account.low_balance_threshold),
        "quiet_hours": account_window(account).as_dict(),
        "quiet_hours_scope": account.quiet_hours_scope,
        "settings": {"quiet_hours": account_window(account).as_dict(), "quiet_hours_scope": account.quiet_hours_scope,
                     "toll_free_reprocessing": account.toll_free_reprocessing,
                     "shared_short_code": shared_short_code.setting(account),
                     "call_max_minutes": account.call_max_minutes,
                     "inbound_grace_minutes": account.inbound_grace_minutes},
        "flags": {flag: getattr(account, flag) for flag in accounts.FLAGS},
        "balance": format_credits(account.balance - expired),
        "held": format_credits(account.held),
        "available": format_credits(account.balance - expired - account.held),
        "created_at": utc(account.created_at).isoformat(),
        "canceled_at": None if account.canceled_at is None else utc(account.canceled_at).isoformat(),
    }


def lot_json(lot: book.LotView) -> dict:
    return {
        "id": str(lot.id),
        "kind": lot.kind,
        "credits": format_credits(lot.amount),
        "remaining": format_credits(lot.remaining),
        "priority": lot.priority,
        "granted_at": lot.granted_at.isoformat(),
        "expires_at": None if lot.expires_at is None else lot.expires_at.isoformat(),
        "user_id": lot.user_id,
        "reference": lot.reference,
    }


_CREDITS = {"type": "string", "pattern": r"^\d+(\.\d{1,3})?$", "examples": ["12.5"]}
_THRESHOLD_NOTE = ("A settlement that leaves the wallet it charged under this emails the user who sent the text and,"
                   " for the company pool, the owners: at most once per user per local day; 0: never")
_SIGNED_CREDITS = {"type": "string", "pattern": r"^-?\d+(\.\d{1,3})?$", "examples": ["-2.5"]}
_INSTANT = {"type": "string", "format": "date-time"}
_PLAN = {"type": "object", "additionalProperties": False, "properties": {
    "monthly_credits": {**_CREDITS, "description": "Credits granted each month (on PATCH: from the next cycle)."},
    "cycle": {"type": "string", "enum": list(CYCLE_MONTHS), "description": "Billing cycle; default monthly."},
    "rollover": {"type": "string", "enum": list(accounts.ROLLOVER_POLICIES),
                 "description": "fifo_12m: unused subscription credits roll over and expire 12 months after their grant."},
}}
_OVERDRAFT = {"type": "object", "additionalProperties": False, "required": ["policy"], "properties": {
    "policy": {"type": "string", "enum": list(accounts.OVERDRAFT_POLICIES),
               "description": "prepaid: holds must fit the available credits; overdraft: down to -limit; "
                              "postpaid: no limit."},
    "limit": {**_CREDITS, "description": "Only for policy overdraft."},
}}
_FLAGS = {"type": "object", "additionalProperties": False, "properties": {
    "credit_hold": {"type": "boolean", "description": "No new plan credits while set."},
    "rollover_protection": {"type": "boolean", "description": ("Plan and rollover credits do not expire while it is on "
                                                                   "(purchased credits never do).")},
    "spam": {"type": "boolean", "description": ("Setting it removes the never-expiring credits, purchased "
                                                 "and bonus (an adjustment entry per lot).")},
}}
_QUIET_HOURS = {"type": ["object", "null"], "additionalProperties": False, "properties": {
    "start": {"type": "string", "example": "08:00"}, "end": {"type": "string", "example": "21:00"}},
    "description": ("The recipient-local window automated texts keep to; null: the TCPA default 08:00-21:00; "
                    "equal start and end: none; the end is exclusive. A bound left out keeps the account's.")}
_QUIET_SCOPE = {"type": "string", "enum": ["automated", "all"],
                "description": ("automated (default): campaigns, drips and scheduled sends keep to quiet hours; "
                                "all: immediate single sends too.")}
_KEYWORD = {"type": "string", "pattern": "^[A-Za-z0-9]{2,15}$", "examples": ["ACME"],
            "description": ("Letters and digits, unique across accounts whatever the case (shown in capitals); not "
                            "STOP, START, HELP, UNSTOP, STOPALL, UNSUBSCRIBE, CANCEL, END, QUIT, INFO, YES and their "
                            "like.")}
_SHARED_SHORT_CODE = {
    "type": ["object", "null"], "additionalProperties": False, "required": ["keyword"],
    "properties": {"keyword": _KEYWORD},
    "description": ("The deployment's shared short code (SHARED_SHORT_CODE), under this keyword: the account may "
                    "send from the code, each text as `KEYWORD: body` at short-code rates, and texts to the code "
                    "starting with the keyword land in the account. Costs the price list's monthly fee, billed at "
                    "month-end. null releases the keyword. 409 when the keyword is taken, or the deployment has "
                    "no shared short code.")}
_TOLL_FREE_REPROCESSING = {"type": "boolean", "description": (
        "Default false. When on, a text sent from a local (long code) number that ends undelivered or failed "
        "with Twilio error 30007 (filtered by the carrier) or 30034 (unregistered 10DLC sender) is sent again, "
        "once, from the account's toll-free number (reprocessed_from / reprocessed_as link the two messages). "
        "The original settles as it would anyway; the resend holds and costs 1 credit per started 160 "
        "characters of the body, and waits parked like any send when the account cannot pay it. MMS, "
        "toll-free and short-code originals, other errors, and accounts without a toll-free number: no resend.")}
_CALL_MAX_MINUTES = {"type": "integer", "minimum": 1, "maximum": MAX_CALL_MINUTES, "description": (
    "Default 10: the minutes an outgoing call holds (and may last) when it names no max_minutes.")}
_INBOUND_GRACE = {"type": "integer", "minimum": 0, "maximum": MAX_CALL_MINUTES, "description": (
    "Default 5: the minutes a forwarded inbound call may talk past what the overdraft policy allows (inbound "
    "calls always ring through); the debt this leaves is bounded by them.")}
_SETTINGS = {"type": "object", "additionalProperties": False, "properties": {
    "quiet_hours": _QUIET_HOURS, "quiet_hours_scope": _QUIET_SCOPE,
    "toll_free_reprocessing": _TOLL_FREE_REPROCESSING, "shared_short_code": _SHARED_SHORT_CODE,
    "call_max_minutes": _CALL_MAX_MINUTES, "inbound_grace_minutes": _INBOUND_GRACE}}
_SETTINGS_SHOWN = {"type": "object", "properties": {
    "quiet_hours": _QUIET_HOURS, "quiet_hours_scope": _QUIET_SCOPE,
    "toll_free_reprocessing": _TOLL_FREE_REPROCESSING,
    "call_max_minutes": _CALL_MAX_MINUTES, "inbound_grace_minutes": _INBOUND_GRACE,
    "shared_short_code": {**_SHARED_SHORT_CODE, "required": ["keyword", "code"],
                          "properties": {"keyword": _KEYWORD,
                                         "code": {"type": "string", "description": "The shared short code to send from."}}}}}
ACCOUNT_SCHEMA = {"type": "object", "properties": {
    "id": {"type": "string"}, "name": {"type": "string"},
    "status": {"type": "string", "enum": list(accounts.STATUSES)},
    "status_reason": {"type": ["string", "null"]}, "timezone": {"type": "string"},
    "plan": {"type": "object", "properties": {**_PLAN["properties"], "next_monthly_credits": {
        "type": ["string", "null"], "description": "Set by a plan change; applies from the next cycle."}}},
    "overdraft": _OVERDRAFT, "low_balance_threshold": _CREDITS, "flags": _FLAGS,
    "quiet_hours": _QUIET_HOURS, "quiet_hours_scope": _QUIET_SCOPE, "settings": _SETTINGS_SHOWN,
    "balance": _SIGNED_CREDITS, "held": _CREDITS, "available": _SIGNED_CREDITS, "created_at": _INSTANT,
    "canceled_at": {**_INSTANT, "type": ["string", "null"], "description": "Set while the account is canceled."},
}}
LOT_SCHEMA = {"type": "object", "properties": {
    "id": {"type": "string"}, "kind": {"type": "string", "enum": list(KINDS)}, "credits": _CREDITS,
    "remaining": _CREDITS, "priority": {"type": "integer"}, "granted_at": _INSTANT,
    "expires_at": {**_INSTANT, "type": ["string", "null"]}, "user_id": {"type": ["string", "null"]},
    "reference": {"type": ["string", "null"]},
}}
_ACCOUNT_PATH = {"name": "account_id", "in": "path", "required": True, "schema": {"type": "string"}}


# What a client does next with a new account (OpenAPI links: clients and the contract tests follow them).
_ACCOUNT_LINKS = {operation_id: {"operationId": operation_id, "parameters": {"account_id": "$response.body#/id"}}
                  for operation_id in ("getAccount", "updateAccount", "grantCredits", "getBalance", "listTransactions",
                                       "listUsers", "createUser", "listNumbers", "addNumber", "createPurchase",
                                       "getAutoRecharge", "setAutoRecharge", "getDunningSchedule", "setDunningSchedule",
                                       "listDunningRuns", "setTwilioCredentials", "listAccountEvents",
                                       "listWebhookEndpoints", "createWebhookEndpoint")}


def _json(schema: dict) -> dict:
    return {"content": {"application/json": {"schema": schema}}}


# What a request looks like: the document's examples (clients copy them, the contract tests send them).
_NEW_ACCOUNT_EXAMPLE = {"name": "Grace Church", "timezone": "America/Chicago",
                        "plan": {"monthly_credits": "1000", "cycle": "monthly", "rollover": "fifo_12m"},
                        "overdraft": {"policy": "prepaid", "limit": "0"}, "low_balance_threshold": "50"}
_ACCOUNT_CHANGE_EXAMPLE = {"low_balance_threshold": "25", "overdraft": {"policy": "overdraft", "limit": "100"}}
_GRANT_EXAMPLE = {"credits": "100", "kind": "purchase"}

OPENAPI_PATHS = {
    "/v1/accounts": {"get": list_operation(
        "listAccounts", "Find accounts (operator)", ACCOUNT_SCHEMA, responses={"403": problem(403, "not the operator")},
        filters=[
            query_filter("q", "A part of the account's name, in any case."),
            query_filter("status", "Accounts in this state.", {"type": "string", "enum": list(accounts.STATUSES)}),
            query_filter("locked", "true: locked accounts (their balance went below what they may spend; sends "
                                   "answer 423 until credits are added); false: the others.", {"type": "boolean"}),
            query_filter("negative", "true: accounts whose balance is below zero; false: the others.",
                         {"type": "boolean"})]),
                     "post": {
        "operationId": "createAccount",
        "summary": "Create an account (operator); its API key is in this answer only",
        "parameters": [{"name": "Idempotency-Key", "in": "header", "schema": {"type": "string"}}],
        "requestBody": {"required": True, **_json({"type": "object", "examples": [_NEW_ACCOUNT_EXAMPLE],
                                                   "required": ["name"], "additionalProperties": False,
                                                   "properties": {
            "name": {"type": "string", "maxLength": 200},
            "timezone": {"type": "string", "description": "IANA zone (default UTC): month ends and expiries are local."},
            "plan": _PLAN, "overdraft": _OVERDRAFT, "low_balance_threshold": _CREDITS}})},
        "responses": {"201": {"description": "created", **_json({**ACCOUNT_SCHEMA, "properties": {
            **ACCOUNT_SCHEMA["properties"], "api_key": {"type": "string"}}}), "links": _ACCOUNT_LINKS},
            "403": problem(403, "not the operator"), "409": problem(409, "Idempotency-Key reused"),
            "422": problem(422, "invalid")},
    }},
    "/v1/accounts/{account_id}": {
        "parameters": [_ACCOUNT_PATH],
        "get": {"operationId": "getAccount", "summary": "An account (its own key or the operator)",
                "responses": {"200": {"description": "the account", **_json(ACCOUNT_SCHEMA)},
                              "404": problem(404, "no such account")}},
        "patch": {"operationId": "updateAccount",
                  "summary": ("Change plan (from the next cycle), overdraft, flags (operator); threshold, "
                              "quiet hours and settings (the account's own key too)"),
                  "requestBody": {"required": True, **_json({"type": "object", "examples": [_ACCOUNT_CHANGE_EXAMPLE],
                                                             "additionalProperties": False,
                                                             "properties": {
                      "name": {"type": "string"}, "plan": _PLAN, "overdraft": _OVERDRAFT, "flags": _FLAGS,
                      "low_balance_threshold": {**_CREDITS, "description": _THRESHOLD_NOTE},
                      "quiet_hours": _QUIET_HOURS, "quiet_hours_scope": _QUIET_SCOPE, "settings": _SETTINGS}})},
                  "responses": {"200": {"description": "the account", **_json(ACCOUNT_SCHEMA)},
                                "403": problem(403, "an account key changing what only the operator may"),
                                "404": problem(404, "no such account"),
                                "409": problem(409, "the shared short code keyword is taken, or the deployment has "
                                                    "no shared short code"),
                                "422": problem(422, "invalid")}},
    },
    "/v1/accounts/{account_id}/grants": {"parameters": [_ACCOUNT_PATH], "post": {
        "operationId": "grantCredits",
        "summary": "Grant credits as a lot (operator)",
        "description": "A pool in debt is repaid first; a locked account back at >= 0 is unlocked. "
                       "Plan credits are refused (409) while the account has a credit hold.",
        "parameters": [{"name": "Idempotency-Key", "in": "header", "schema": {"type": "string"}}],
        "requestBody": {"required": True, **_json({"type": "object", "examples": [_GRANT_EXAMPLE],
                                                   "required": ["credits", "kind"],
                                                   "additionalProperties": False, "properties": {
            "credits": _CREDITS, "kind": {"type": "string", "enum": list(KINDS)},
            "granted_at": {**_INSTANT, "description": "Default now."},
            "expires_at": {**_INSTANT, "type": ["string", "null"],
                           "description": "Default by kind: plan at cycle end, rollover 12 months after the grant "
                                          "(local midnight), purchase and bonus never; null = never."},
            "user_id": {"type": "string", "description": "A role-user user's own credits instead of the pool."},
            "priority": {"type": "integer", "minimum": 0, "maximum": 1000,
                         "description": "Burn order: lower first (defaults plan 10, rollover/bonus 20, purchase 30)."},
            "reference": {"type": "string", "maxLength": 100}}})},
        "responses": {"201": {"description": "the lot", **_json(LOT_SCHEMA)},
                      "403": problem(403, "not the operator"),
                      "404": problem(404, "no such account (or user)"),
                      "409": problem(409, "credit hold, or Idempotency-Key reused"),
                      "422": problem(422, "invalid")},
    }},
}
