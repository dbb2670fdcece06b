"""Dunning: an account's schedule of steps (with template warnings), its runs, and each site's Twilio credentials."""

import asyncio
from datetime import UTC, datetime

from aiohttp import web

from shared.billing import dunning, dunning_texts
from shared.db import Database

from ..appkeys import DATABASE, SETTINGS
from ..auth import require_access
from ..bodies import json_response, query_limit, read_json
from ..cursors import decode_cursor, page_of
from ..fields import QueryFilters
from ..openapi import list_operation, problem
from ..policy import CONFIGURE, OPERATE, action
from .accounts import _ACCOUNT_PATH, _INSTANT, _json

routes = web.RouteTableDef()


@routes.put("/v1/accounts/{account_id}/dunning")
@action(CONFIGURE)
async def put_schedule(request: web.Request) -> web.Response:
    account_id = request.match_info["account_id"]
    require_access(request, account_id)
    body = await read_json(request)
    public_base_url = request.app[SETTINGS].public_base_url

    def save(database: Database) -> dunning.ScheduleView:
        with database.unit_of_work() as session:
            return dunning.set_schedule(session, account_id, steps=body.get("steps"),
                                        final_action=body.get("final_action", "suspend"),
                                        site=body.get("site", "default"), update_url=body.get("update_url"),
                                        public_base_url=public_base_url, now=datetime.now(UTC))

    return json_response(_schedule_json(await asyncio.to_thread(save, request.app[DATABASE])))


@routes.get("/v1/accounts/{account_id}/dunning")
@action(CONFIGURE)
async def get_schedule(request: web.Request) -> web.Response:
    account_id = request.match_info["account_id"]
    require_access(request, account_id)
    public_base_url = request.app[SETTINGS].public_base_url

    def read(database: Database) -> dunning.ScheduleView:
        with database.read_only() as session:
            return dunning.get_schedule(session, account_id, public_base_url=public_base_url, now=datetime.now(UTC))

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
@action(OPERATE)
async def put_integration(request: web.Request) -> web.Response:
    site = request.match_info["site"]
    body = await read_json(request)

    def save(database: Database) -> dunning_texts.IntegrationView:
        with database.unit_of_work() as session:
            return dunning_texts.set_integration(session, site, account_sid=body.get("account_sid"),
                                               auth_token=body.get("auth_token"), from_number=body.get("from"),
                                               now=datetime.now(UTC))

    return json_response(_integration_json(await asyncio.to_thread(save, request.app[DATABASE])))


@routes.get("/v1/dunning/integrations/{site}")
@action(OPERATE)
async def get_integration(request: web.Request) -> web.Response:
    site = request.match_info["site"]

    def read(database: Database) -> dunning_texts.IntegrationView:
        with database.read_only() as session:
            return dunning_texts.get_integration(session, site)

    return json_response(_integration_json(await asyncio.to_thread(read, request.app[DATABASE])))


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
    return {"site": view.site, "account_sid": view.account_sid, "from": view.from_number, "status": view.status,
            "broken_reason": view.broken_reason, "updated_at": view.updated_at.isoformat()}


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
                     "description": "After the last step: `suspend` the account (lifted when paid) or `none`."},
    "site": {"type": "string", "default": "default", "description": "Whose Twilio credentials send the texts."},
    "update_url": {"type": ["string", "null"], "format": "uri", "description": "The `update_link`."},
}}
_SCHEDULE_OUT = {"type": "object", "properties": {
    **_SCHEDULE_IN["properties"], "is_default": {"type": "boolean"},
    "warnings": {"type": "array", "items": {"type": "string"},
                 "description": "Texts without STOP/HELP wording or longer than one segment."}}}
_RUN = {"type": "object", "properties": {
    "id": {"type": "string"}, "status": {"type": "string", "enum": ["open", "exhausted", "recovered"]},
    "reason": {"type": "string", "enum": ["auto_recharge", "month_end"]}, "amount_cents": {"type": "integer"},
    "next_step": {"type": "integer"}, "next_step_at": {**_INSTANT, "type": ["string", "null"]},
    "steps": {"type": "array", "items": {"type": "object"}}}}
_INTEGRATION = {"type": "object", "properties": {
    "site": {"type": "string"}, "account_sid": {"type": "string"}, "from": {"type": "string"},
    "status": {"type": "string", "enum": ["ok", "broken"]}, "broken_reason": {"type": ["string", "null"]},
    "updated_at": _INSTANT}}
_SITE_PATH = {"name": "site", "in": "path", "required": True, "schema": {"type": "string"}}

_AUTH_TOKEN = {"type": "string", "description": "Stored encrypted (CREDITQ_SECRET_KEY); never shown again."}

# What a request looks like: the document's examples (clients copy them, the contract tests send them).
_SITE_CREDENTIALS_EXAMPLE = {"account_sid": "AC" + "0" * 32, "auth_token": "site-auth-token", "from": "+14155550199"}

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
                "summary": "Save a site's Twilio credentials for dunning texts (operator); clears `broken`",
                "requestBody": {"required": True, **_json({"type": "object", "examples": [_SITE_CREDENTIALS_EXAMPLE],
                                                            "required": ["account_sid", "auth_token", "from"],
                                                            "properties": {"account_sid": {"type": "string"},
                                                                           "auth_token": _AUTH_TOKEN,
                                                                           "from": {"type": "string"}}})},
                "responses": {"200": {"description": "Saved", **_json(_INTEGRATION), "links": {
                    "getDunningIntegration": {"operationId": "getDunningIntegration",
                                              "parameters": {"site": "$request.path.site"}}}},
                              "403": problem(403, "Not the operator"),
                              "422": problem(422, "Invalid credentials or number")}},
        "get": {"operationId": "getDunningIntegration",
                "summary": "A site's dunning integration and its status (operator)",
                "responses": {"200": {"description": "The integration", **_json(_INTEGRATION)},
                              "403": problem(403, "Not the operator"),
                              "404": problem(404, "None saved")}},
    },
}
