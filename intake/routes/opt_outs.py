"""/v1/opt-outs: the recipients an account must not text, and its do-not-contact imports.

An account key acts on its own account; the operator names one with `?account_id=`.
"""

import asyncio
from datetime import UTC

from aiohttp import web
from sqlalchemy.orm import Session

from shared.db import Database
from shared.errors import NotFound
from shared.messaging import opt_outs
from shared.messaging.phone_numbers import parse_e164
from shared.models import Account, OptOut

from ..appkeys import DATABASE
from ..auth import listed_account
from ..bodies import json_response, query_limit, read_csv, read_json
from ..cursors import decode_cursor, page_of
from ..fields import Fields, QueryFilters
from ..idempotency import idempotent
from ..openapi import CREATED_RANGE, list_operation, problem, query_filter
from ..policy import CONFIGURE, READ_ACTIVITY, SEND, action

MAX_INVALID_ROWS_SHOWN = 1000

routes = web.RouteTableDef()


def _check_account(session: Session, account_id: str) -> None:
    if session.get(Account, account_id) is None:
        raise NotFound(f"No account {account_id}.")


def _as_dict(opt: OptOut) -> dict:
    created_at = opt.created_at if opt.created_at.tzinfo else opt.created_at.replace(tzinfo=UTC)  # SQLite: naive UTC
    return {"phone": opt.phone, "source": opt.source, "created_at": created_at.isoformat()}


@routes.get("/v1/opt-outs")
@action(READ_ACTIVITY)
async def list_opt_outs(request: web.Request) -> web.Response:
    account_id = listed_account(request)
    limit = query_limit(request)
    before_id = decode_cursor(request)
    filters = QueryFilters(request.query, page_names=("limit", "cursor", "account_id"))
    wanted = {"source": filters.choice("source", opt_outs.SOURCES), "phone": filters.phone("phone"),
              "created_after": filters.instant("created_after"), "created_before": filters.instant("created_before")}
    filters.done()
    database: Database = request.app[DATABASE]

    def page() -> dict:
        with database.read_only() as session:
            _check_account(session, account_id)
            rows = opt_outs.list_opt_outs(session, account_id, limit=limit + 1, before_id=before_id, **wanted)
            return page_of(request, rows, limit, _as_dict)

    return json_response(await asyncio.to_thread(page))


@routes.post("/v1/opt-outs")
@action(SEND)
@idempotent
async def add_opt_out(request: web.Request) -> web.Response:
    account_id = listed_account(request)
    fields = Fields(await read_json(request))
    raw_phone = fields.text("phone", required=True, max_length=40)
    fields.done()
    phone = parse_e164(raw_phone, field="phone", drop_extension=True)
    database: Database = request.app[DATABASE]

    def add() -> tuple[bool, dict]:
        with database.unit_of_work() as session:
            _check_account(session, account_id)
            created = opt_outs.opt_out(session, account_id, phone, opt_outs.FROM_API)
            return created, _as_dict(opt_outs.get_opt_out(session, account_id, phone))

    created, opt = await asyncio.to_thread(add)
    return json_response(opt, status=201 if created else 200)


@routes.delete("/v1/opt-outs/{phone}")
@action(CONFIGURE)
async def remove_opt_out(request: web.Request) -> web.Response:
    account_id = listed_account(request)
    phone = parse_e164(request.match_info["phone"], field="phone", drop_extension=True)
    database: Database = request.app[DATABASE]

    def remove() -> bool:
        with database.unit_of_work() as session:
            _check_account(session, account_id)
            return opt_outs.opt_in(session, account_id, phone, by_recipient=False)

    if not await asyncio.to_thread(remove):
        raise NotFound(f"{phone} is not opted out.")
    return web.Response(status=204)


@routes.post("/v1/opt-outs/import")
@action(CONFIGURE)
@idempotent
async def import_do_not_contact(request: web.Request) -> web.Response:
    account_id = listed_account(request)
    csv_text = await read_csv(request)
    added, invalid = await asyncio.to_thread(opt_outs.import_do_not_contact, request.app[DATABASE], account_id,
                                             csv_text)
    return json_response({
        "added": added,
        "invalid_count": len(invalid),
        "invalid_rows": [{"line": row.line, "value": row.value, "reason": row.reason}
                         for row in invalid[:MAX_INVALID_ROWS_SHOWN]],
    })


_ACCOUNT_ID = {"name": "account_id", "in": "query", "required": False, "schema": {"type": "string"},
               "description": "Required with the operator key; an account key may only name its own account"}
_OPT_OUT = {"type": "object", "required": ["phone", "source", "created_at"], "properties": {
    "phone": {"type": "string", "description": "E.164", "examples": ["+14155550100"]},
    "source": {"type": "string", "enum": [opt_outs.FROM_STOP_KEYWORD, opt_outs.FROM_TWILIO_21610, opt_outs.FROM_API,
                                          opt_outs.FROM_IMPORT],
               "description": "stop_keyword: the recipient texted STOP; twilio_21610: Twilio reported them "
                              "unsubscribed; api / import: the customer"},
    "created_at": {"type": "string", "format": "date-time"}}}
_JSON = "application/json"

# What a request looks like: the document's examples (clients copy them, the contract tests send them).
_PHONE_EXAMPLE = {"phone": "+14155550100"}

OPENAPI_PATHS = {
    "/v1/opt-outs": {
        "get": list_operation("listOptOuts", "List the account's opt-outs", _OPT_OUT, filters=[
            _ACCOUNT_ID,
            query_filter("source", "Where the opt-out came from.", {"type": "string", "enum": list(opt_outs.SOURCES)}),
            query_filter("phone", "The recipient, E.164 (`+` as %2B, or left out).", {"type": "string"}),
            *CREATED_RANGE]),
        "post": {
            "operationId": "addOptOut",
            "summary": "Opt a recipient out: the account's messages to them are refused (409)",
            "parameters": [_ACCOUNT_ID, {"name": "Idempotency-Key", "in": "header", "schema": {"type": "string"}}],
            "requestBody": {"required": True, "content": {_JSON: {"schema": {
                "type": "object", "examples": [_PHONE_EXAMPLE],
                "required": ["phone"], "properties": {"phone": {"type": "string"}}}}}},
            "responses": {"201": {"description": "opted out", "content": {_JSON: {"schema": _OPT_OUT}}, "links": {
                "removeOptOut": {"operationId": "removeOptOut", "parameters": {"phone": "$response.body#/phone"}}}},
                          "200": {"description": "already opted out", "content": {_JSON: {"schema": _OPT_OUT}}},
                          "404": problem(404, "no such account"),
                          "409": problem(409, "Idempotency-Key reused"),
                          "422": problem(422, "not an E.164 phone number, or no account_id with the operator key")},
        },
    },
    "/v1/opt-outs/{phone}": {
        "delete": {
            "operationId": "removeOptOut",
            "summary": "Lift an opt-out the customer made (api or import)",
            "description": "A recipient who texted STOP (or whom Twilio reports unsubscribed) can only opt back "
                           "in by texting START: removing theirs answers 409.",
            "parameters": [_ACCOUNT_ID, {"name": "phone", "in": "path", "required": True,
                                         "schema": {"type": "string"}, "description": "E.164, '+' as %2B"}],
            "responses": {"204": {"description": "removed"},
                          "404": problem(404, "not opted out, or no such account"),
                          "409": problem(409, "the recipient's own opt-out"),
                          "422": problem(422, "not an E.164 phone number")},
        },
    },
    "/v1/opt-outs/import": {
        "post": {
            "operationId": "importDoNotContact",
            "summary": "Import a do-not-contact list",
            "description": "One phone per row: the first column, or the column headed phone, phone_number, number, "
                           "to or mobile. Valid rows are added even when others are not; re-importing adds nothing.",
            "parameters": [_ACCOUNT_ID, {"name": "Idempotency-Key", "in": "header", "schema": {"type": "string"}}],
            "requestBody": {"required": True, "content": {
                "text/csv": {"schema": {"type": "string", "examples": ["phone\n+14155550100\n+14155550101\n"]}},
                "multipart/form-data": {"schema": {"type": "object", "required": ["file"], "properties": {
                    "file": {"type": "string", "format": "binary"}}}}}},
            "responses": {"200": {"description": "imported", "content": {_JSON: {"schema": {
                "type": "object", "properties": {
                    "added": {"type": "integer", "description": "phones newly opted out"},
                    "invalid_count": {"type": "integer"},
                    "invalid_rows": {"type": "array", "description": f"the first {MAX_INVALID_ROWS_SHOWN}",
                                     "items": {"type": "object", "properties": {
                                         "line": {"type": "integer"}, "value": {"type": "string"},
                                         "reason": {"type": "string"}}}}}}}}},
                          "404": problem(404, "no such account"),
                          "409": problem(409, "Idempotency-Key reused, or its first request still running"),
                          "415": problem(415, "neither text/csv nor multipart"),
                          "422": problem(422, "empty list, not UTF-8, or no account_id with the operator key")},
        },
    },
}
