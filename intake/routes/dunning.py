"""Dunning: an account's schedule of steps (with template warnings), its sites (Twilio number and credentials), the
runs its billing system opens for its customers, and creditq's own runs of the account."""

import asyncio
from datetime import UTC, datetime
from functools import partial

from aiohttp import web

from shared.billing import dunning, dunning_texts
from shared.db import Database
from shared.messaging.messages import message_view
from shared.twilio.errors import TransientTwilioError
from shared.twilio.gateway import account_status

from ..appkeys import CLOCK, DATABASE, PRINCIPAL, SETTINGS
from ..auth import listed_account, require_access
from ..bodies import json_response, query_limit, read_json
from ..cursors import decode_cursor, page_of
from ..errors import Problem
from ..fields import QueryFilters
from ..idempotency import idempotent
from ..openapi import list_operation, problem
from ..policy import CONFIGURE, action
from .accounts import _ACCOUNT_PATH, _INSTANT, _json

routes = web.RouteTableDef()


@routes.put("/v1/accounts/{account_id}/dunning")
@action(CONFIGURE)
async def put_schedule(request: web.Request) -> web.Response:
    account_id = request.match_info["account_id"]
    require_access(request, account_id)
    body = await read_json(request)

    def save(database: Database) -> dunning.ScheduleView:
        with database.unit_of_work() as session:
            return dunning.set_schedule(session, account_id, steps=body.get("steps"),
                                        final_action=body.get("final_action", "suspend"),
                                        site=body.get("site", dunning_texts.BUILT_IN_SITE),
                                        update_url=body.get("update_url"), now=datetime.now(UTC))

    return json_response(_schedule_json(await asyncio.to_thread(save, request.app[DATABASE])))


@routes.get("/v1/accounts/{account_id}/dunning")
@action(CONFIGURE)
async def get_schedule(request: web.Request) -> web.Response:
    account_id = request.match_info["account_id"]
    require_access(request, account_id)

    def read(database: Database) -> dunning.ScheduleView:
        with database.read_only() as session:
            return dunning.get_schedule(session, account_id)

    return json_response(_schedule_json(await asyncio.to_thread(read, request.app[DATABASE])))


@routes.get("/v1/accounts/{account_id}/dunning/runs")
@action(CONFIGURE)
async def list_runs(request: web.Request) -> web.Response:
    account_id = request.match_info["account_id"]
    require_access(request, account_id)
    limit = query_limit(request)
    before_id = decode_cursor(request, text_ids=True)
    QueryFilters(request.query).done()

    def read(database: Database) -> dict:
        with database.read_only() as session:
            runs = dunning.list_runs(session, account_id, limit=limit + 1, before_id=before_id)
            steps = dunning.steps_of(session, [run.id for run in runs[:limit]])
            return page_of(request, runs, limit, lambda run: _run_json(run, steps[run.id]))

    return json_response(await asyncio.to_thread(read, request.app[DATABASE]))


@routes.put("/v1/dunning/integrations/{site}")
@action(CONFIGURE)
async def put_integration(request: web.Request) -> web.Response:
    """An account key saves its account's site; the operator key creditq's own, built-in site."""
    site = request.match_info["site"]
    account_id = request[PRINCIPAL].account_id
    body = await read_json(request)
    try:
        view = await asyncio.to_thread(
            dunning_texts.save_integration, request.app[DATABASE], site, account_id=account_id,
            account_sid=body.get("account_sid"), auth_token=body.get("auth_token"), from_number=body.get("from"),
            help_text=body.get("help_text"), account_status=partial(account_status, request.app[SETTINGS]),
            now=request.app[CLOCK]())
    except TransientTwilioError:
        raise Problem(503, "Twilio unavailable", "Twilio could not confirm the credentials just now; nothing was "
                      "stored. Try again.") from None
    return json_response(_integration_json(view))


@routes.get("/v1/dunning/integrations/{site}")
@action(CONFIGURE)
async def get_integration(request: web.Request) -> web.Response:
    site = request.match_info["site"]
    account_id = request[PRINCIPAL].account_id

    def read(database: Database) -> dunning_texts.IntegrationView:
        with database.read_only() as session:
            return dunning_texts.get_integration(session, site, account_id=account_id)

    return json_response(_integration_json(await asyncio.to_thread(read, request.app[DATABASE])))


@routes.post("/v1/dunning/runs")
@action(CONFIGURE)
@idempotent
async def open_run(request: web.Request) -> web.Response:
    account_id = listed_account(request)
    body = await read_json(request)
    now = request.app[CLOCK]()

    def open_(database: Database) -> dict:
        with database.unit_of_work() as session:
            run = dunning.open_customer_run(session, account_id, site=body.get("site"), customer=body.get("customer"),
                                            amount_due=body.get("amount_due"), currency=body.get("currency"),
                                            update_url=body.get("update_url"), started_at=body.get("started_at"),
                                            now=now)
            return _customer_run_json(*dunning.get_customer_run(session, account_id, run.id))

    return json_response(await asyncio.to_thread(open_, request.app[DATABASE]), status=201)


@routes.get("/v1/dunning/runs/{run_id}")
@action(CONFIGURE)
async def get_run(request: web.Request) -> web.Response:
    account_id = listed_account(request)
    run_id = request.match_info["run_id"]

    def read(database: Database) -> dict:
        with database.read_only() as session:
            return _customer_run_json(*dunning.get_customer_run(session, account_id, run_id))

    return json_response(await asyncio.to_thread(read, request.app[DATABASE]))


@routes.post("/v1/dunning/runs/{run_id}/resolve")
@action(CONFIGURE)
async def resolve_run(request: web.Request) -> web.Response:
    return await _end_run(request, "resolved")


@routes.post("/v1/dunning/runs/{run_id}/cancel")
@action(CONFIGURE)
async def cancel_run(request: web.Request) -> web.Response:
    return await _end_run(request, "canceled")


async def _end_run(request: web.Request, ending: str) -> web.Response:
    account_id = listed_account(request)
    run_id = request.match_info["run_id"]
    now = request.app[CLOCK]()

    def end(database: Database) -> dict:
        with database.unit_of_work() as session:
            dunning.end_customer_run(session, account_id, run_id, ending, now=now)
            return _customer_run_json(*dunning.get_customer_run(session, account_id, run_id))

    return json_response(await asyncio.to_thread(end, request.app[DATABASE]))


def _schedule_json(view: dunning.ScheduleView) -> dict:
    return {"site": view.site, "steps": view.steps, "final_action": view.final_action, "update_url": view.update_url,
            "is_default": view.is_default, "warnings": view.warnings}


def _run_json(run, steps) -> dict:
    return {
        "id": run.id, "status": run.status, "reason": run.reason, "references": run.references,
        "amount_cents": run.amount_cents, "currency": run.currency, "next_step": run.next_step,
        "next_step_at": run.next_step_at.isoformat() if run.next_step_at else None,
        "started_at": run.started_at.isoformat(), "ended_at": run.ended_at.isoformat() if run.ended_at else None,
        "ended_reason": run.ended_reason, "final_action": run.final_action,
        "steps": [{"step": s.step, "payment_id": s.payment_id, "email": s.email_status, "sms": s.sms_status,
                   "started_at": s.started_at.isoformat(),
                   "finished_at": s.finished_at.isoformat() if s.finished_at else None} for s in steps],
    }


def _integration_json(view: dunning_texts.IntegrationView) -> dict:
    return {"site": view.site, "account_sid": view.account_sid, "from": view.from_number, "help_text": view.help_text,
            "status": view.status, "broken_reason": view.broken_reason, "updated_at": view.updated_at.isoformat()}


def _customer_run_json(run, steps: list[dict]) -> dict:
    return {
        "id": run.id, "status": run.status, "site": run.site, "customer": run.customer,
        "amount_due": f"{run.amount_cents // 100}.{run.amount_cents % 100:02d}", "currency": run.currency.upper(),
        "update_url": run.update_url, "started_at": _iso(run.started_at), "next_step": run.next_step,
        "next_step_at": _iso(run.next_step_at), "ended_at": _iso(run.ended_at), "ended_reason": run.ended_reason,
        "steps": [{"step": step["step"], "day": step["day"], "due_at": _iso(step["due_at"]), "email": step["email"],
                   "sms": step["sms"], "message": _sent_text(step["message"]), "started_at": _iso(step["started_at"]),
                   "finished_at": _iso(step["finished_at"])} for step in steps],
    }


def _sent_text(message) -> dict | None:
    """What became of a step's text: the message as GET /v1/messages/{id} shows it, in brief."""
    if message is None:
        return None
    view = message_view(message)
    return {name: view[name] for name in ("id", "status", "from", "to", "body", "segments", "encoding",
                                          "credits_charged", "error_code", "error_message", "updated_at")}


def _iso(value: datetime | None) -> str | None:
    """SQLite hands back naive datetimes; every time creditq stores is UTC."""
    if value is None:
        return None
    return (value if value.tzinfo else value.replace(tzinfo=UTC)).isoformat()


_TEMPLATE = {"type": "string", "description": f"Liquid; variables: {', '.join(dunning.VARIABLES)}"}
_STEP = {"type": "object", "required": ["day"], "properties": {
    "day": {"type": "integer", "minimum": 0, "maximum": 365, "description": "Days after the failed payment."},
    "retry": {"type": "boolean", "default": True, "description": "Retry the payment first."},
    "email": {"type": ["object", "null"], "properties": {"subject": _TEMPLATE, "body": _TEMPLATE}},
    "sms": {"type": ["object", "null"], "properties": {"body": {
        **_TEMPLATE, "description": "Liquid; one segment with STOP and HELP wording, or the step is saved "
                                    "with a warning"}}},
}}
_SCHEDULE_IN = {"type": "object", "required": ["steps"], "properties": {
    "steps": {"type": "array", "minItems": 1, "maxItems": dunning.MAX_STEPS, "items": _STEP},
    "final_action": {"type": "string", "enum": list(dunning.FINAL_ACTIONS),
                     "description": "Kept for compatibility: a customer's run ends `exhausted` after its last "
                                    "step and nothing is suspended."},
    "site": {"type": "string", "default": "default", "description": "The site of runs that name none."},
    "update_url": {"type": ["string", "null"], "format": "uri",
                   "description": "The `update_url` of runs that give none."},
}}
_SCHEDULE_OUT = {"type": "object", "properties": {
    **_SCHEDULE_IN["properties"], "is_default": {"type": "boolean"},
    "warnings": {"type": "array", "items": {"type": "string"},
                 "description": "Texts without STOP/HELP wording or longer than one segment."}}}
_RUN = {"type": "object", "properties": {
    "id": {"type": "string"},
    "status": {"type": "string", "enum": ["open", "exhausted", "recovered", "resolved", "canceled"]},
    "reason": {"type": "string", "enum": ["auto_recharge", "month_end", "customer"]}, "amount_cents": {"type": "integer"},
    "next_step": {"type": "integer"}, "next_step_at": {**_INSTANT, "type": ["string", "null"]},
    "steps": {"type": "array", "items": {"type": "object"}}}}
_INTEGRATION = {"type": "object", "properties": {
    "site": {"type": "string"}, "account_sid": {"type": "string"}, "from": {"type": "string"},
    "help_text": {"type": ["string", "null"]},
    "status": {"type": "string", "enum": ["ok", "broken"]}, "broken_reason": {"type": ["string", "null"]},
    "updated_at": _INSTANT}}
_SITE_PATH = {"name": "site", "in": "path", "required": True, "schema": {"type": "string", "minLength": 1,
                                                                          "maxLength": 64}}
_RUN_PATH = {"name": "run_id", "in": "path", "required": True, "schema": {"type": "string"}}
_OPERATOR_ACCOUNT = {"name": "account_id", "in": "query", "required": False, "schema": {"type": "string"},
                     "description": "The account (the operator key only; an account key acts on its own)."}
_TEXT = {"type": ["object", "null"], "description": "The step's text as a message of the account (GET /v1/messages/{id})",
         "properties": {"id": {"type": "string"}, "status": {"type": "string"}, "from": {"type": "string"},
                        "to": {"type": "string"}, "body": {"type": "string"}, "segments": {"type": "integer"},
                        "encoding": {"type": "string"}, "credits_charged": {"type": ["string", "null"]},
                        "error_code": {"type": ["integer", "null"]}, "error_message": {"type": ["string", "null"]}}}
_CUSTOMER = {"type": "object", "required": ["id", "name"], "properties": {
    "id": {"type": "string", "minLength": 1, "maxLength": 100, "description": "The customer's id in the billing system."},
    "name": {"type": "string", "minLength": 1, "maxLength": 200},
    "phone": {"type": ["string", "null"], "description": "E.164; texts go here."},
    "phone_extension": {"type": "string", "readOnly": True, "description": (
        "Set when the phone came with an extension: the line is kept (a STOP from it counts), no text goes to it, "
        "and the run's reminders go by email")},
    "email": {"type": ["string", "null"], "format": "email"},
    "fields": {"type": "object", "description": "Anything the templates use as `customer.fields.*`."}}}
_CUSTOMER_RUN_IN = {"type": "object", "required": ["customer", "amount_due", "currency"], "properties": {
    "site": {"type": "string", "description": "One of the account's sites (default: the schedule's site)."},
    "customer": _CUSTOMER,
    "amount_due": {"type": "string", "pattern": r"^\d+(\.\d{1,2})?$", "description": "Decimal string: \"49.90\"."},
    "currency": {"type": "string", "minLength": 3, "maxLength": 3, "description": "ISO 4217, such as USD."},
    "update_url": {"type": "string", "format": "uri", "description": "Where the customer updates the card "
                                                                     "(default: the schedule's update_url)."},
    "started_at": {**_INSTANT, "description": "When the payment failed (default now): step days count from it."}}}
_CUSTOMER_RUN = {"type": "object", "properties": {
    "id": {"type": "string"},
    "status": {"type": "string", "enum": ["open", "exhausted", "resolved", "canceled"]},
    "site": {"type": "string"}, "customer": _CUSTOMER, "amount_due": {"type": "string"}, "currency": {"type": "string"},
    "update_url": {"type": "string"}, "started_at": _INSTANT, "next_step": {"type": "integer"},
    "next_step_at": {**_INSTANT, "type": ["string", "null"]}, "ended_at": {**_INSTANT, "type": ["string", "null"]},
    "ended_reason": {"type": ["string", "null"]},
    "steps": {"type": "array", "items": {"type": "object", "properties": {
        "step": {"type": "integer"}, "day": {"type": "integer"}, "due_at": _INSTANT,
        "email": {"type": ["string", "null"], "description": "What the e-mail did (`sent to ...`, `skipped: ...`)."},
        "sms": {"type": ["string", "null"], "description": "What the text did: its message's status and id, or why "
                                                           "it was not sent (`blocked: ...` while the site's "
                                                           "credentials are broken)."},
        "message": _TEXT, "started_at": {**_INSTANT, "type": ["string", "null"]},
        "finished_at": {**_INSTANT, "type": ["string", "null"]}}}}}}
_CUSTOMER_RUN_EXAMPLE = {"site": "gym-downtown", "amount_due": "49.90", "currency": "USD",
                         "update_url": "https://billing.example.com/update/cus_123",
                         "customer": {"id": "cus_123", "name": "Dana Whitfield", "phone": "+14155550100",
                                      "email": "dana@example.com", "fields": {"plan": "Gold"}}}

_AUTH_TOKEN = {"type": "string", "description": "Stored encrypted (CREDITQ_SECRET_KEY); never shown again."}

# What a request looks like: the document's examples (clients copy them, the contract tests send them).
_SITE_CREDENTIALS_EXAMPLE = {"account_sid": "AC" + "0" * 32, "auth_token": "site-auth-token", "from": "+14155550199",
                             "help_text": "Downtown Gym billing: call 415-555-0199. Reply STOP to opt out."}


_RUN_REFUSALS = {"403": problem(403, "Not allowed to configure the account"),
                 "404": problem(404, "No such run of this account"),
                 "422": problem(422, "The operator key names no account (`?account_id=`)")}


def _end_operation(operation_id: str, summary: str) -> dict:
    return {"operationId": operation_id, "summary": summary,
            "responses": {"200": {"description": "The run", **_json(_CUSTOMER_RUN)}, **_RUN_REFUSALS}}

OPENAPI_PATHS = {
    "/v1/accounts/{account_id}/dunning": {
        "parameters": [_ACCOUNT_PATH],
        "put": {"operationId": "setDunningSchedule", "summary": "Set the dunning schedule",
                "requestBody": {"required": True, **_json({**_SCHEDULE_IN, "examples": [{"steps": [
                    {"day": 0, "email": {"subject": "Payment of {{ amount_due }} failed",
                                         "body": "Update your card: {{ update_link }}"}},
                    {"day": 3, "sms": {"body": "{{ amount_due }} is due: {{ update_link }} Reply HELP for help, "
                                               "STOP to opt out."}}]}]})},
                "responses": {"200": {"description": "Saved, with warnings", **_json(_SCHEDULE_OUT)},
                              "404": problem(404, "No such account"),
                              "422": problem(422, "Invalid steps or templates")}},
        "get": {"operationId": "getDunningSchedule", "summary": "The dunning schedule (the default one until set)",
                "responses": {"200": {"description": "The schedule", **_json(_SCHEDULE_OUT)},
                              "404": problem(404, "No such account")}},
    },
    "/v1/accounts/{account_id}/dunning/runs": {
        "parameters": [_ACCOUNT_PATH],
        "get": list_operation("listDunningRuns", "Dunning runs and what each step did", _RUN, filters=[]),
    },
    "/v1/dunning/integrations/{site}": {
        "parameters": [_SITE_PATH],
        "put": {"operationId": "setDunningIntegration",
                "summary": "Save a site's Twilio number and credentials for dunning texts; clears `broken`",
                "description": ("With an account key: one of the account's sites, whose customers' runs text from "
                                "`from` (a number of the account, used by no other site) with these credentials, "
                                "proven with Twilio before they are stored. With the operator key: creditq's own, "
                                "built-in site, which texts the owners of accounts creditq is chasing."),
                "requestBody": {"required": True, **_json({"type": "object", "examples": [_SITE_CREDENTIALS_EXAMPLE],
                                                            "required": ["account_sid", "auth_token", "from"],
                                                            "properties": {"account_sid": {"type": "string"},
                                                                           "auth_token": _AUTH_TOKEN,
                                                                           "from": {"type": "string"},
                                                                           "help_text": {
                                                                               "type": ["string", "null"],
                                                                               "maxLength": 320,
                                                                               "description": "The answer to HELP "
                                                                               "texted to the site's number."}}})},
                "responses": {"200": {"description": "Saved", **_json(_INTEGRATION), "links": {
                    "getDunningIntegration": {"operationId": "getDunningIntegration",
                                              "parameters": {"site": "$request.path.site"}}}},
                              "403": problem(403, "Not allowed to configure the account"),
                              "422": problem(422, "Invalid or unproven credentials, or a `from` the account does "
                                                  "not own"),
                              "503": problem(503, "Twilio could not confirm the credentials; nothing stored")}},
        "get": {"operationId": "getDunningIntegration",
                "summary": "A site of the caller's account (the operator: the built-in site) and its status",
                "responses": {"200": {"description": "The integration", **_json(_INTEGRATION)},
                              "403": problem(403, "Not allowed to configure the account"),
                              "404": problem(404, "No such site of this account")}},
    },
    "/v1/dunning/runs": {
        "parameters": [_OPERATOR_ACCOUNT],
        "post": {"operationId": "openDunningRun",
                 "summary": "Open a dunning run for a customer whose payment failed",
                 "description": ("On the account's schedule, texting from `site`. Each step's text goes through the "
                                 "message pipeline (metered against the account's credits, quiet hours and opt-outs "
                                 "applied) and its e-mail to the customer; `dunning.step_sent` and "
                                 "`dunning.exhausted` events tell what happened. One open run per site and customer."),
                 "parameters": [{"name": "Idempotency-Key", "in": "header", "schema": {"type": "string",
                                                                                       "maxLength": 200}}],
                 "requestBody": {"required": True, **_json({**_CUSTOMER_RUN_IN,
                                                            "examples": [_CUSTOMER_RUN_EXAMPLE]})},
                 "responses": {"201": {"description": "Opened", **_json(_CUSTOMER_RUN), "links": {
                     "getDunningRun": {"operationId": "getDunningRun", "parameters": {"run_id": "$response.body#/id"}}}},
                     "403": problem(403, "Not allowed to configure the account"),
                     "404": problem(404, "No such account"),
                     "409": problem(409, "The customer already has an open run on this site"),
                     "422": problem(422, "Invalid customer, amount, site or URL, or no schedule saved")}},
    },
    "/v1/dunning/runs/{run_id}": {
        "parameters": [_RUN_PATH, _OPERATOR_ACCOUNT],
        "get": {"operationId": "getDunningRun", "summary": "A customer's run: each step, what was sent and when",
                "responses": {"200": {"description": "The run", **_json(_CUSTOMER_RUN)}, **_RUN_REFUSALS}},
    },
    "/v1/dunning/runs/{run_id}/resolve": {
        "parameters": [_RUN_PATH, _OPERATOR_ACCOUNT],
        "post": _end_operation("resolveDunningRun", "The customer paid: the run ends, no later step runs"),
    },
    "/v1/dunning/runs/{run_id}/cancel": {
        "parameters": [_RUN_PATH, _OPERATOR_ACCOUNT],
        "post": _end_operation("cancelDunningRun", "Stop the run: no later step runs"),
    },
}
