"""Calls and voice broadcasts: POST /v1/calls, GET /v1/calls[/{id}], and /v1/voice-broadcasts with its steering."""

import asyncio
import logging
from datetime import UTC, datetime

from aiohttp import web

from shared.db import Database
from shared.ledger.accounts import get_account
from shared.messaging.rates import current_rate_card
from shared.money import format_credits
from shared.voice import broadcasts
from shared.voice.calls import STATUSES, CallRequest, accept_call, call_view, find_calls, get_call

from ..appkeys import DATABASE, ENQUEUER, PRINCIPAL
from ..auth import listed_account
from ..bodies import json_response, query_limit, read_json
from ..cursors import decode_cursor, page_of
from ..errors import Problem
from ..fields import QueryFilters, refuse_unknown
from ..idempotency import idempotent
from ..openapi import list_operation, problem, query_filter, request_fields
from ..policy import READ_ACTIVITY, SEND, acting_user, action

log = logging.getLogger(__name__)
PLACE_ACTOR = "place_call"
FAN_OUT_ACTOR = "fan_out_broadcast"
routes = web.RouteTableDef()


def _account_to_act_for(request: web.Request, payload: dict) -> str:
    account_id = request[PRINCIPAL].account_id or payload.get("account_id")
    if not isinstance(account_id, str):
        raise Problem(422, "Validation failed", "The operator key must name the account_id to call for.",
                      errors={"account_id": "is required with the operator key"})
    return account_id


@routes.post("/v1/calls")
@action(SEND)
@idempotent
async def create_call(request: web.Request) -> web.Response:
    payload = await read_json(request)
    refuse_unknown(payload, CALL_FIELDS)
    account_id = _account_to_act_for(request, payload)
    call_request = CallRequest(to=payload.get("to"), from_=payload.get("from"), say=payload.get("say"),
                               play_url=payload.get("play_url"), connect_to=payload.get("connect_to"),
                               max_minutes=payload.get("max_minutes"),
                               machine_detection=payload.get("machine_detection", False),
                               user_id=acting_user(request[PRINCIPAL], payload.get("user_id")))

    def accept(database: Database) -> dict:
        with database.unit_of_work() as session:
            call, price = accept_call(session, account_id, call_request, rate_card=current_rate_card(session),
                                      now=datetime.now(UTC))
            return {"id": call.id, "status": call.status,
                    "estimate": {"minutes": call.max_minutes, "credits": format_credits(call.credits_estimated),
                                 "credits_per_minute": format_credits(price.per_minute)}}

    answer = await asyncio.to_thread(accept, request.app[DATABASE])
    await _enqueue(request, PLACE_ACTOR, answer["id"])
    return json_response(answer, status=202)


async def _enqueue(request: web.Request, actor: str, argument: str) -> None:
    """The call (or broadcast) is committed: if Redis cannot take its job now, the call sweep enqueues its calls."""
    try:
        await asyncio.to_thread(request.app[ENQUEUER].send_many_blocking, actor, [(argument,)])
    except Exception:
        log.exception("could not enqueue %s(%s); the call sweep will", actor, argument)


@routes.get("/v1/calls/{call_id}")
@action(READ_ACTIVITY)
async def read_call(request: web.Request) -> web.Response:
    principal = request[PRINCIPAL]

    def read(database: Database) -> dict:
        with database.read_only() as session:
            return call_view(get_call(session, request.match_info["call_id"], account_id=principal.account_id,
                                      user_id=principal.own_only))

    return json_response(await asyncio.to_thread(read, request.app[DATABASE]))


@routes.get("/v1/calls")
@action(READ_ACTIVITY)
async def list_calls(request: web.Request) -> web.Response:
    account_id = listed_account(request)
    limit = query_limit(request)
    before_id = decode_cursor(request, text_ids=True)
    filters = QueryFilters(request.query, page_names=("limit", "cursor", "account_id"))
    status, direction = filters.choice("status", STATUSES), filters.choice("direction", ("outbound", "inbound"))
    broadcast_id = filters.text("broadcast_id", max_length=40)
    filters.done()
    own_only = request[PRINCIPAL].own_only

    def read(database: Database) -> dict:
        with database.read_only() as session:
            get_account(session, account_id)
            rows = find_calls(session, account_id, limit=limit + 1, before_id=before_id, status=status,
                              direction=direction, broadcast_id=broadcast_id, user_id=own_only)
            return page_of(request, rows, limit, call_view)

    return json_response(await asyncio.to_thread(read, request.app[DATABASE]))


@routes.post("/v1/voice-broadcasts")
@action(SEND)
@idempotent
async def create_broadcast(request: web.Request) -> web.Response:
    payload = await read_json(request)
    refuse_unknown(payload, BROADCAST_FIELDS)
    account_id = _account_to_act_for(request, payload)
    broadcast_request = broadcasts.BroadcastRequest(
        name=payload.get("name"), from_=payload.get("from"), recipients=payload.get("recipients"),
        say=payload.get("say"), play_url=payload.get("play_url"),
        machine_detection=payload.get("machine_detection", False), quiet_hours=payload.get("quiet_hours"),
        expected_minutes=payload.get("expected_minutes"), max_minutes=payload.get("max_minutes"),
        user_id=acting_user(request[PRINCIPAL], payload.get("user_id")))

    def create(database: Database) -> dict:
        with database.unit_of_work() as session:
            broadcast, _ = broadcasts.create_broadcast(session, account_id, broadcast_request,
                                                       rate_card=current_rate_card(session), now=datetime.now(UTC))
            return broadcasts.broadcast_view(session, broadcast)

    view = await asyncio.to_thread(create, request.app[DATABASE])
    await _enqueue(request, FAN_OUT_ACTOR, view["id"])
    return json_response({**view, "estimate": {"credits": view["credits_estimated"]}}, status=202)


@routes.get("/v1/voice-broadcasts/{broadcast_id}")
@action(READ_ACTIVITY)
async def read_broadcast(request: web.Request) -> web.Response:
    principal = request[PRINCIPAL]

    def read(database: Database) -> dict:
        with database.read_only() as session:
            broadcast = broadcasts.get_broadcast(session, request.match_info["broadcast_id"],
                                                 account_id=principal.account_id, user_id=principal.own_only)
            return broadcasts.broadcast_view(session, broadcast)

    return json_response(await asyncio.to_thread(read, request.app[DATABASE]))


async def _steer(request: web.Request, verb: str) -> web.Response:
    principal = request[PRINCIPAL]

    def steer(database: Database) -> dict:
        with database.unit_of_work() as session:
            broadcast = broadcasts.steer(session, request.match_info["broadcast_id"], verb,
                                         account_id=principal.account_id, user_id=principal.own_only,
                                         now=datetime.now(UTC))
            return broadcasts.broadcast_view(session, broadcast)

    view = await asyncio.to_thread(steer, request.app[DATABASE])
    if verb == "resume":
        await _enqueue(request, FAN_OUT_ACTOR, view["id"])
    return json_response(view)


@routes.post("/v1/voice-broadcasts/{broadcast_id}/pause")
@action(SEND)
async def pause_broadcast(request: web.Request) -> web.Response:
    return await _steer(request, "pause")


@routes.post("/v1/voice-broadcasts/{broadcast_id}/resume")
@action(SEND)
async def resume_broadcast(request: web.Request) -> web.Response:
    return await _steer(request, "resume")


@routes.post("/v1/voice-broadcasts/{broadcast_id}/cancel")
@action(SEND)
async def cancel_broadcast(request: web.Request) -> web.Response:
    return await _steer(request, "cancel")


_CREDITS = {"type": "string", "examples": ["2"]}
_NULLABLE_INT = {"type": ["integer", "null"]}
CALL_SCHEMA = {"type": "object", "properties": {
    "id": {"type": "string"}, "status": {"type": "string", "enum": list(STATUSES)},
    "direction": {"type": "string", "enum": ["outbound", "inbound"],
                  "description": "inbound: someone called one of the account's numbers"},
    "to": {"type": "string"}, "from": {"type": "string"},
    "connect_to": {"type": ["string", "null"], "description": (
        "Outbound: the user's phone called first and bridged to `to` (both legs billed at the outgoing rate). "
        "Inbound: the phone the call was forwarded to")},
    "broadcast_id": {"type": ["string", "null"]}, "user_id": {"type": ["string", "null"]},
    "machine_detection": {"type": "boolean"}, "max_minutes": {"type": "integer"},
    "minutes_held": {**_NULLABLE_INT, "description": "The whole minutes the hold covers (inbound: what the "
                                                     "overdraft policy allowed plus the grace)"},
    "time_limit": {**_NULLABLE_INT, "description": "Seconds Twilio lets the call talk: minutes_held x 60"},
    "legs": {"type": "integer"}, "duration_seconds": _NULLABLE_INT,
    "minutes_billed": {**_NULLABLE_INT, "description": "ceil(duration_seconds / 60)"},
    "answered_by": {"type": ["string", "null"], "description": "With machine detection: human, machine_*, fax, "
                                                               "unknown"},
    "credits_estimated": _CREDITS,
    "credits_charged": {"type": ["string", "null"], "description": "Set once settled"},
    "voicemail": {"type": ["object", "null"], "properties": {
        "recording_url": {"type": ["string", "null"]}, "transcription": {"type": ["string", "null"]}}},
    "skip_reason": {"type": ["string", "null"]}, "error_message": {"type": ["string", "null"]},
    "twilio_sid": {"type": ["string", "null"]},
    "created_at": {"type": "string", "format": "date-time"}, "updated_at": {"type": "string", "format": "date-time"},
}}
_COUNTS = {"type": "object", "properties": {name: {"type": "integer"} for name in (
    "total", "queued", "human", "machine", "unknown", "no_answer", "busy", "failed", "skipped", "canceled")}}
BROADCAST_SCHEMA = {"type": "object", "properties": {
    "id": {"type": "string"}, "name": {"type": "string"}, "from": {"type": "string"},
    "status": {"type": "string", "enum": ["running", "paused", "canceled", "completed"]},
    "machine_detection": {"type": "boolean"}, "expected_minutes": {"type": "integer"},
    "max_minutes": {"type": "integer"}, "counts": _COUNTS,
    "quiet_hours": {"type": ["object", "null"]},
    "credits_estimated": _CREDITS, "credits_charged": _CREDITS,
    "estimate": {"type": "object", "properties": {"credits": _CREDITS},
                 "description": "On the create's answer: numbers x expected_minutes x rate + detection"},
    "created_at": {"type": "string", "format": "date-time"}, "updated_at": {"type": "string", "format": "date-time"},
}}
_IDEMPOTENCY = {"name": "Idempotency-Key", "in": "header", "schema": {"type": "string", "maxLength": 200},
                "description": "The same key and body answer the first response again; another body 409."}
_BROADCAST_PATH = {"name": "broadcast_id", "in": "path", "required": True, "schema": {"type": "string"}}
_CALL_EXAMPLE = {"to": "+14155550100", "from": "+14155550199", "say": "Your open house starts at 2pm"}
_BROADCAST_EXAMPLE = {"name": "Sunday service", "from": "+14155550199", "say": "Service starts at 10",
                      "recipients": [{"to": "+14155550100"}], "machine_detection": True}


def _steering(verb: str, what: str) -> dict:
    return {"post": {
        "operationId": f"{verb}VoiceBroadcast", "summary": what, "parameters": [_BROADCAST_PATH],
        "responses": {"200": {"description": "the broadcast", "content": {"application/json": {
            "schema": BROADCAST_SCHEMA}}},
            "404": problem(404, "no such broadcast (or another account's, or, to a role-`user` key, another user's)"),
            "409": problem(409, "the broadcast has ended, or is not in a state this applies to"),
            **({"423": problem(423, "the account is locked")} if verb == "resume" else {})}}}


OPENAPI_PATHS = {
    "/v1/calls": {
        "post": {
            "operationId": "placeCall", "summary": "Place a call: a recording or text to say, or a bridge",
            "description": (
                "Stores the call, then a worker holds credits for `max_minutes` (the account's default, 10, when "
                "left out) at the outgoing rate (2 credits a minute on the default card), or for as many whole "
                "minutes as the account can pay, and places it through Twilio with `time_limit` = those minutes: "
                "a prepaid account with 3 credits gets a 1-minute call (60 s) charged 2 credits, never a negative "
                "balance. When Twilio reports the call ended it is charged ceil(CallDuration / 60) x the rate and "
                "the rest of the hold is released. With `connect_to` the user's phone is called first and bridged "
                "to `to`: each leg is charged as an outgoing call. `machine_detection` adds the flat detection "
                "charge (0.5 credit)."),
            "parameters": [_IDEMPOTENCY],
            "requestBody": {"required": True, "content": {"application/json": {"schema": {
                "type": "object", "examples": [_CALL_EXAMPLE], "required": ["to", "from"],
                "additionalProperties": False,  # an unknown field is a 422 naming it
                "properties": {
                    "to": {"type": "string", "examples": ["+14155550100"]},
                    "from": {"type": "string", "description": "One of the account's numbers"},
                    "say": {"type": "string", "maxLength": 4096},
                    "play_url": {"type": "string", "format": "uri", "description": "A recording to play"},
                    "connect_to": {"type": "string", "description": "The user's phone, for click-to-call"},
                    "max_minutes": {"type": "integer", "minimum": 1, "maximum": 240},
                    "machine_detection": {"type": "boolean"},
                    "user_id": {"type": "string"},
                    "account_id": {"type": "string", "description": "Only with the operator key"},
                }}}}},
            "responses": {
                "202": {"description": "Accepted", "content": {"application/json": {"schema": {
                    "type": "object", "required": ["id", "status", "estimate"], "properties": {
                        "id": {"type": "string"}, "status": {"type": "string"},
                        "estimate": {"type": "object", "properties": {
                            "minutes": {"type": "integer"}, "credits": _CREDITS,
                            "credits_per_minute": _CREDITS}}}}}}},
                "402": problem(402, "The account cannot pay for one minute of the call"),
                "403": problem(403, "A role-`user` key named another user"),
                "404": problem(404, "No such account (operator key)"),
                "409": problem(409, "The number called opted out or is on the do-not-contact list, or the "
                                    "Idempotency-Key was used with another request"),
                "422": problem(422, "Invalid number, content or max_minutes, or a `from` that is not the "
                                    "account's; `errors` names each field"),
                "423": problem(423, "The account is locked"),
            },
        },
        "get": list_operation("listCalls", "The account's calls, placed and received", CALL_SCHEMA, filters=[
            query_filter("status", "Calls in this status.", {"type": "string", "enum": list(STATUSES)}),
            query_filter("direction", "outbound or inbound.", {"type": "string", "enum": ["outbound", "inbound"]}),
            query_filter("broadcast_id", "The calls of one voice broadcast.", {"type": "string"}),
            query_filter("account_id", "Only with the operator key: the account.", {"type": "string"})]),
    },
    "/v1/calls/{call_id}": {"get": {
        "operationId": "getCall", "summary": "A call, what it was held and charged",
        "parameters": [{"name": "call_id", "in": "path", "required": True, "schema": {"type": "string"}}],
        "responses": {"200": {"description": "The call", "content": {"application/json": {"schema": CALL_SCHEMA}}},
                      "404": problem(404, "No such call (or another account's, or another user's)")},
    }},
    "/v1/voice-broadcasts": {"post": {
        "operationId": "createVoiceBroadcast", "summary": "Call many numbers with one recording or text",
        "description": (
            "Each distinct number becomes a call (GET /v1/calls?broadcast_id=), placed, held and charged on its "
            "own at the voice-broadcast rate, plus the flat detection charge per number called when "
            "`machine_detection` is on (the message then plays after an answering machine's beep). Opted-out and "
            "do-not-contact numbers are skipped; quiet hours (default 08:00-21:00 at the number called; equal "
            "start and end turn them off) hold a number's call until they end. The estimate is numbers x "
            "expected_minutes x rate + detection."),
        "parameters": [_IDEMPOTENCY],
        "requestBody": {"required": True, "content": {"application/json": {"schema": {
            "type": "object", "examples": [_BROADCAST_EXAMPLE], "required": ["name", "from", "recipients"],
            "additionalProperties": False,  # an unknown field is a 422 naming it
            "properties": {
                "name": {"type": "string", "maxLength": 200}, "from": {"type": "string"},
                "say": {"type": "string"}, "play_url": {"type": "string", "format": "uri"},
                "recipients": {"type": "array", "minItems": 1, "maxItems": broadcasts.MAX_RECIPIENTS,
                               "items": {"type": "object", "required": ["to"],
                                         "properties": {"to": {"type": "string"}}}},
                "machine_detection": {"type": "boolean"},
                "quiet_hours": {"type": ["object", "null"], "properties": {"start": {"type": "string"},
                                                                         "end": {"type": "string"}}},
                "expected_minutes": {"type": "integer", "minimum": 1, "maximum": 240},
                "max_minutes": {"type": "integer", "minimum": 1, "maximum": 240},
                "user_id": {"type": "string"}, "account_id": {"type": "string"},
            }}}}},
        "responses": {
            "202": {"description": "Created; its calls are being placed", "content": {"application/json": {
                "schema": BROADCAST_SCHEMA}}},
            "402": problem(402, "The account cannot pay for one minute of one call"),
            "404": problem(404, "No such account (operator key)"),
            "409": problem(409, "The Idempotency-Key was used with another request"),
            "422": problem(422, "Invalid name, from, content, numbers or minutes; `errors` names each field"),
            "423": problem(423, "The account is locked"),
        },
    }},
    "/v1/voice-broadcasts/{broadcast_id}": {"get": {
        "operationId": "getVoiceBroadcast", "summary": "A voice broadcast and its counts by outcome",
        "parameters": [_BROADCAST_PATH],
        "responses": {"200": {"description": "counts: human and machine (AnsweredBy), unknown (answered without "
                                             "detection), no_answer, busy, failed, skipped, canceled; queued are "
                                             "still to be placed or talking",
                              "content": {"application/json": {"schema": BROADCAST_SCHEMA}}},
                      "404": problem(404, "No such broadcast (or another account's, or, to a role-`user` key, "
                                              "another user's)")},
    }},
    "/v1/voice-broadcasts/{broadcast_id}/pause": _steering("pause", "Pause: calls not placed yet wait"),
    "/v1/voice-broadcasts/{broadcast_id}/resume": _steering("resume", "Resume a paused broadcast"),
    "/v1/voice-broadcasts/{broadcast_id}/cancel": _steering("cancel", "Cancel: calls not placed yet are canceled"),
}
# what a POST may name: its documented schema's
CALL_FIELDS, BROADCAST_FIELDS = (request_fields(OPENAPI_PATHS, path) for path in ("/v1/calls", "/v1/voice-broadcasts"))
