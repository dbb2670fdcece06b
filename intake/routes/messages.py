"""POST /v1/messages (accept, persist, then enqueue) and GET /v1/messages/{id}."""

import asyncio
import logging
from datetime import UTC, datetime

from aiohttp import web

from shared.db import Database
from shared.messages import MessageRequest, accept_message, get_message, message_view, send_delay_ms
from shared.money import format_credits
from shared.rates import default_rate_card

from ..appkeys import DATABASE, ENQUEUER, PRINCIPAL
from ..bodies import json_response, read_json
from ..enqueue import Enqueuer
from ..errors import Problem
from ..idempotency import idempotent

log = logging.getLogger(__name__)

SEND_ACTOR = "send_message"
RELEASE_ACTOR = "release_scheduled"  # a scheduled message's job, delayed until its send_at

routes = web.RouteTableDef()


@routes.post("/v1/messages")
@idempotent
async def create_message(request: web.Request) -> web.Response:
    payload = await read_json(request)
    account_id = request[PRINCIPAL].account_id or payload.get("account_id")
    if not isinstance(account_id, str):
        raise Problem(422, "Validation failed", "The operator key must name the account_id to send for.",
                      errors={"account_id": "is required with the operator key"})
    message_request = MessageRequest(to=payload.get("to"), from_=payload.get("from"), body=payload.get("body"),
                                     media_urls=payload.get("media_urls"), user_id=payload.get("user_id"),
                                     send_at=payload.get("send_at"))
    answer = await asyncio.to_thread(_accept, request.app[DATABASE], request.app[ENQUEUER], account_id,
                                     message_request)
    return json_response(answer, status=202)


def _accept(database: Database, enqueuer: Enqueuer, account_id: str, message_request: MessageRequest) -> dict:
    """Commit the message, then enqueue its send from the same thread (one hop off the loop, not two)."""
    with database.unit_of_work() as session:
        message, estimate = accept_message(session, account_id, message_request, rate_card=default_rate_card(),
                                           now=datetime.now(UTC))
    delay_ms = send_delay_ms(message.send_at, datetime.now(UTC))
    if message.status in ("accepted", "scheduled") and delay_ms is not None:
        actor = SEND_ACTOR if message.status == "accepted" else RELEASE_ACTOR
        try:
            enqueuer.send_blocking(actor, message.id, delay_ms=delay_ms or None)
        except Exception:
            # The message is committed: the sweeper enqueues accepted messages whose job never came.
            log.exception("could not enqueue %s for %s; the sweeper will", actor, message.id)
    return {
        "id": message.id,
        "status": message.status,
        "estimate": {"segments": estimate.segments, "encoding": estimate.encoding,
                     "credits": format_credits(estimate.credits_total)},
    }


@routes.get("/v1/messages/{message_id}")
async def read_message(request: web.Request) -> web.Response:
    message_id = request.match_info["message_id"]
    account_id = request[PRINCIPAL].account_id
    database = request.app[DATABASE]

    def read() -> dict:
        with database.unit_of_work() as session:
            return message_view(get_message(session, message_id, account_id=account_id))

    return json_response(await asyncio.to_thread(read))


_CREDITS = {"type": "string", "examples": ["1.5"]}
_PROBLEM = {"content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}}
_STATUSES = ["accepted", "scheduled", "queued", "sending", "sent", "delivered", "undelivered", "failed", "canceled",
             "parked"]

OPENAPI_PATHS = {
    "/v1/messages": {"post": {
        "summary": "Send one message",
        "description": (
            "Validates the numbers (E.164) and the body, refuses opted-out and do-not-contact recipients, prices "
            "the message and checks the account can pay, then stores it before answering 202: an accepted message "
            "is never lost. A worker then holds the credits, sends it through Twilio and charges the actual "
            "segments once Twilio reports the final status. With `send_at` in the future it waits as `scheduled` "
            "and is released at that time (more than 7 days ahead: within the sweeper's interval of it). "
            "Messages of a locked account, or of one whose Twilio credentials were rejected, wait as `parked` "
            "and go out once it may send again."),
        "parameters": [{"name": "Idempotency-Key", "in": "header", "schema": {"type": "string", "maxLength": 200},
                        "description": "The same key and body answer the first response again; another body 409."}],
        "requestBody": {"required": True, "content": {"application/json": {"schema": {
            "type": "object", "required": ["to", "from", "body"],
            "properties": {
                "to": {"type": "string", "examples": ["+14155550100"], "description": "E.164 recipient"},
                "from": {"type": "string", "description": "One of the account's sender numbers"},
                "body": {"type": "string", "maxLength": 1600, "description": "May be empty with media_urls"},
                "media_urls": {"type": "array", "maxItems": 10, "items": {"type": "string", "format": "uri"},
                               "description": "Makes it an MMS"},
                "user_id": {"type": "string", "description": "The user sending (draws on their own credits)"},
                "send_at": {"type": "string", "format": "date-time", "description": "ISO-8601 with offset"},
                "account_id": {"type": "string", "description": "Only with the operator key: the account to send for"},
            }}}}},
        "responses": {
            "202": {"description": "Accepted", "content": {"application/json": {"schema": {
                "type": "object", "required": ["id", "status", "estimate"],
                "properties": {
                    "id": {"type": "string"}, "status": {"type": "string", "enum": ["accepted", "scheduled", "parked"]},
                    "estimate": {"type": "object", "properties": {
                        "segments": {"type": "integer"}, "encoding": {"type": "string", "enum": ["GSM-7", "UCS-2"]},
                        "credits": _CREDITS}},
                }}}}},
            "402": {"description": "The account cannot pay: `available` and `required` credits", **_PROBLEM},
            "409": {"description": "The recipient opted out or is on the do-not-contact list", **_PROBLEM},
            "422": {"description": "Invalid number, body, media, user or send_at; `errors` names each field",
                    **_PROBLEM},
            "423": {"description": "The account is locked (its balance went below zero)", **_PROBLEM},
        },
    }},
    "/v1/messages/{message_id}": {"get": {
        "summary": "A message and where it is in its life",
        "parameters": [{"name": "message_id", "in": "path", "required": True, "schema": {"type": "string"}}],
        "responses": {
            "200": {"description": "The message", "content": {"application/json": {"schema": {
                "type": "object",
                "properties": {
                    "id": {"type": "string"}, "status": {"type": "string", "enum": _STATUSES},
                    "to": {"type": "string"}, "from": {"type": "string"}, "body": {"type": "string"},
                    "media_urls": {"type": "array", "items": {"type": "string"}},
                    "user_id": {"type": ["string", "null"]},
                    "segments": {"type": "integer", "description": "Twilio's count once known, else the estimate"},
                    "encoding": {"type": "string"}, "credits_estimated": _CREDITS,
                    "credits_charged": {"type": ["string", "null"], "description": "Set once settled (0: voided)"},
                    "twilio_sid": {"type": ["string", "null"]},
                    "twilio_price": {"type": ["string", "null"], "description": "Twilio's price, for reconciliation"},
                    "error_code": {"type": ["integer", "null"]},
                    "error_message": {"type": ["string", "null"],
                                      "description": "Also why a parked message waits"},
                    "send_at": {"type": ["string", "null"], "format": "date-time"},
                    "created_at": {"type": "string", "format": "date-time"},
                    "updated_at": {"type": "string", "format": "date-time"},
                }}}}},
            "404": {"description": "No such message (or another account's)", **_PROBLEM},
        },
    }},
}
