"""An account's sender numbers: add, list, remove."""

import asyncio

from aiohttp import web

from shared.db import Database
from shared.ledger.accounts import get_account
from shared.ledger.expiry import utc
from shared.messaging import senders
from shared.messaging.rates import SENDER_TYPES
from shared.models import PhoneNumber
from shared.money import format_credits
from shared.voice import inbound

from ..appkeys import DATABASE
from ..auth import require_access
from ..bodies import json_response, query_limit, read_json
from ..cursors import decode_cursor, page_of
from ..fields import Fields, QueryFilters
from ..idempotency import idempotent
from ..openapi import list_operation, problem, query_filter
from ..policy import CONFIGURE, action
from .accounts import _ACCOUNT_PATH, _CREDITS, _INSTANT, _json

routes = web.RouteTableDef()


@routes.post("/v1/accounts/{account_id}/numbers")
@action(CONFIGURE)
@idempotent
async def add_number(request: web.Request) -> web.Response:
    account_id = request.match_info["account_id"]
    require_access(request, account_id)
    fields = Fields(await read_json(request))
    phone = fields.text("phone", required=True, max_length=40)
    number_type = fields.choice("type", SENDER_TYPES, required=True)
    fields.done()

    def add(database: Database) -> dict:
        with database.unit_of_work() as session:
            return number_json(senders.add_number(session, account_id, phone, number_type))

    return json_response(await asyncio.to_thread(add, request.app[DATABASE]), status=201)


@routes.get("/v1/accounts/{account_id}/numbers")
@action(CONFIGURE)
async def list_numbers(request: web.Request) -> web.Response:
    account_id = request.match_info["account_id"]
    require_access(request, account_id)
    limit = query_limit(request)
    before_id = decode_cursor(request)
    filters = QueryFilters(request.query)
    number_type, released = filters.choice("type", SENDER_TYPES), filters.flag("released")
    filters.done()

    def read(database: Database) -> dict:
        with database.read_only() as session:
            get_account(session, account_id)
            rows = senders.list_numbers(session, account_id, number_type=number_type, released=bool(released),
                                        limit=limit + 1, before_id=before_id)
            return page_of(request, rows, limit, number_json)

    return json_response(await asyncio.to_thread(read, request.app[DATABASE]))


@routes.delete("/v1/accounts/{account_id}/numbers/{phone}")
@action(CONFIGURE)
async def remove_number(request: web.Request) -> web.Response:
    account_id, phone = request.match_info["account_id"], request.match_info["phone"]
    require_access(request, account_id)

    def remove(database: Database) -> None:
        with database.unit_of_work() as session:
            senders.remove_number(session, account_id, phone)

    await asyncio.to_thread(remove, request.app[DATABASE])
    return web.Response(status=204)


@routes.patch("/v1/accounts/{account_id}/numbers/{phone}")
@action(CONFIGURE)
async def configure_number(request: web.Request) -> web.Response:
    account_id, phone = request.match_info["account_id"], request.match_info["phone"]
    require_access(request, account_id)
    body = await read_json(request)
    fields = Fields(body)
    forward_to = fields.text("forward_to", max_length=40)
    voicemail, transcribe = fields.boolean("voicemail"), fields.boolean("transcribe")
    fields.done()
    forward = None if "forward_to" in body and body["forward_to"] is None else forward_to or inbound.UNCHANGED

    def configure(database: Database) -> dict:
        with database.unit_of_work() as session:
            get_account(session, account_id)
            return number_json(inbound.set_number_voice(session, account_id, phone, forward_to=forward,
                                                        voicemail=voicemail, transcribe=transcribe))

    return json_response(await asyncio.to_thread(configure, request.app[DATABASE]))


def number_json(number: PhoneNumber) -> dict:
    return {"phone": number.phone, "type": number.type, "forward_to": number.forward_to,
            "voicemail": number.voicemail, "transcribe": number.transcribe,
            "monthly_credits": format_credits(number.monthly_cost), "created_at": utc(number.created_at).isoformat(),
            "released_at": None if number.released_at is None else utc(number.released_at).isoformat()}


NUMBER_SCHEMA = {"type": "object", "properties": {
    "phone": {"type": "string", "description": "E.164, or a US short code's 5 or 6 digits"},
    "type": {"type": "string", "enum": list(SENDER_TYPES)},
    "monthly_credits": {**_CREDITS, "description": "What the number costs per month (rate card, when added)."},
    "forward_to": {"type": ["string", "null"], "description": "Inbound calls ring this phone first."},
    "voicemail": {"type": "boolean", "description": "Callers nobody answered may leave a voicemail (1 credit)."},
    "transcribe": {"type": "boolean", "description": "Voicemails are transcribed (4 credits)."},
    "created_at": _INSTANT,
    "released_at": {"type": ["string", "null"], "format": "date-time",
                    "description": "When the account's cancel released it; null while it is the account's sender."},
}}

# What a request looks like: the document's examples (clients copy them, the contract tests send them).
_NUMBER_EXAMPLE = {"phone": "+14155550123", "type": "long_code"}

OPENAPI_PATHS = {
    "/v1/accounts/{account_id}/numbers": {
        "parameters": [_ACCOUNT_PATH],
        "get": list_operation("listNumbers", "The account's sender numbers", NUMBER_SCHEMA, filters=[
            query_filter("type", "Numbers of this type.", {"type": "string", "enum": list(SENDER_TYPES)}),
            query_filter("released", "true: instead the numbers released when the account was canceled (they "
                                     "send nothing and cost nothing; inbound texts to them still land).",
                         {"type": "boolean"})]),
        "post": {
            "operationId": "addNumber",
            "summary": "Add a sender number; its type picks the rate and the throughput limit",
            "description": ("The type must be the number's: `short_code` a US short code of 5 or 6 digits "
                            "(`12345`), `toll_free` a toll-free number in E.164, `long_code` any other E.164 number; "
                            "else 422 naming `phone`."),
            "parameters": [{"name": "Idempotency-Key", "in": "header", "schema": {"type": "string"}}],
            "requestBody": {"required": True, **_json({"type": "object", "examples": [_NUMBER_EXAMPLE],
                                                       "required": ["phone", "type"],
                                                       "additionalProperties": False, "properties": {
                "phone": {"type": "string", "examples": ["+14155550100"]},
                "type": {"type": "string", "enum": list(SENDER_TYPES)}}})},
            "responses": {"201": {"description": "the number", **_json(NUMBER_SCHEMA), "links": {"removeNumber": {
                "operationId": "removeNumber", "parameters": {"account_id": "$request.path.account_id",
                                                              "phone": "$response.body#/phone"}}}},
                          "404": problem(404, "no such account"),
                          "409": problem(409, "already added (here or by another account), or Idempotency-Key reused"),
                          "422": problem(422, "invalid, or not a number of the type given")},
        },
    },
    "/v1/accounts/{account_id}/numbers/{phone}": {
        "parameters": [_ACCOUNT_PATH, {"name": "phone", "in": "path", "required": True, "schema": {"type": "string"},
                                       "description": "E.164, with + encoded as %2B, or a short code's digits"}],
        "patch": {"operationId": "configureNumber", "summary": "Forward the number's inbound calls, take voicemail",
                  "description": (
                      "Inbound calls to the number are always answered: forwarded to `forward_to` (null: not "
                      "forwarded) for as long as the overdraft policy allows plus the account's grace minutes, at "
                      "the forwarding rate (3 credits a minute), then, if nobody answered and `voicemail` is on, "
                      "recorded (1 credit) and, with `transcribe`, transcribed (4 credits)."),
                  "requestBody": {"required": True, **_json({"type": "object", "additionalProperties": False,
                                                             "examples": [{"forward_to": "+14155550123",
                                                                           "voicemail": True, "transcribe": True}],
                                                             "properties": {
                      "forward_to": {"type": ["string", "null"]}, "voicemail": {"type": "boolean"},
                      "transcribe": {"type": "boolean"}}})},
                  "responses": {"200": {"description": "the number", **_json(NUMBER_SCHEMA)},
                                "404": problem(404, "not a number of the account"),
                                "422": problem(422, "not an E.164 phone number, or a bad field")}},
        "delete": {"operationId": "removeNumber", "summary": "Remove a sender number",
                   "responses": {"204": {"description": "removed"}, "404": problem(404, "not a number of the account"),
                                 "422": problem(422, "not an E.164 phone number nor a short code")}},
    },
}
