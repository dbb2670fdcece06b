"""POST /v1/messages (accept, persist, then enqueue) and GET /v1/messages/{id}."""

import asyncio
import functools
import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime

from aiohttp import web
from sqlalchemy.exc import DataError, IntegrityError

from shared.db import Database
from shared.errors import DomainError
from shared.messaging.estimate import Estimate
from shared.messaging.messages import MessageRequest, accept_messages, get_message, message_view, send_delay_ms
from shared.messaging.rates import current_rate_card
from shared.messaging.reprocessing import resend_of
from shared.messaging.send_cap import SendCap
from shared.models import Message
from shared.money import format_credits

from ..appkeys import DATABASE, ENQUEUER, PRINCIPAL, SETTINGS
from ..bodies import json_response, read_json
from ..enqueue import Enqueuer
from ..errors import Problem
from ..fields import refuse_unknown
from ..group_commit import GroupCommit
from ..idempotency import idempotent
from ..openapi import problem, request_fields
from ..policy import READ_ACTIVITY, SEND, acting_user, action

log = logging.getLogger(__name__)

SEND_ACTOR = "send_message"
RELEASE_ACTOR = "release_scheduled"  # a scheduled message's job, delayed until its send_at
MAX_BATCH = 200  # messages per unit of work
WRITERS = 2  # units of work in flight at once (see GroupCommit)

routes = web.RouteTableDef()


@routes.post("/v1/messages")
@action(SEND)
@idempotent
async def create_message(request: web.Request) -> web.Response:
    payload = await read_json(request)
    refuse_unknown(payload, MESSAGE_FIELDS)
    account_id = request[PRINCIPAL].account_id or payload.get("account_id")
    if not isinstance(account_id, str):
        raise Problem(422, "Validation failed", "The operator key must name the account_id to send for.",
                      errors={"account_id": "is required with the operator key"})
    message_request = MessageRequest(to=payload.get("to"), from_=payload.get("from"), body=payload.get("body"),
                                     media_urls=payload.get("media_urls"),
                                     user_id=acting_user(request[PRINCIPAL], payload.get("user_id")),
                                     send_at=payload.get("send_at"))
    answer = await request.app[ACCEPT_BATCHER].accept(account_id, message_request)
    return json_response(answer, status=202)


class AcceptBatcher(GroupCommit[tuple[str, MessageRequest], dict]):
    """Group commit for POST /v1/messages: the requests gathered in a batch are accepted in one unit of work
    (one read of their facts, one INSERT, one commit), and their send jobs enqueued in one Redis round trip.
    Each request gets its 202 body or its DomainError."""

    def __init__(self, database: Database, enqueuer: Enqueuer, *, cap: SendCap, shared_short_code: str | None = None,
                 max_batch: int = MAX_BATCH, writers: int = WRITERS):
        super().__init__(functools.partial(_accept_batch, database, enqueuer, cap, shared_short_code),
                         max_batch=max_batch, writers=writers)

    async def accept(self, account_id: str, message_request: MessageRequest) -> dict:
        """The 202 body; raises the message's DomainError."""
        return await self.submit((account_id, message_request))


ACCEPT_BATCHER = web.AppKey("accept_batcher", AcceptBatcher)


async def accept_batcher_ctx(app: web.Application) -> AsyncIterator[None]:
    """The batcher's writers run as long as the app serves, each with a connection of their pool (for_batches)."""
    with app[DATABASE].for_batches(WRITERS) as database:
        batcher = AcceptBatcher(database, app[ENQUEUER], cap=SendCap.from_settings(app[SETTINGS]),
                                shared_short_code=app[SETTINGS].shared_short_code)
        app[ACCEPT_BATCHER] = batcher
        batcher.start()
        yield
        await batcher.close()


def _accept_batch(database: Database, enqueuer: Enqueuer, cap: SendCap, shared_short_code: str | None,
                  requests: list[tuple[str, MessageRequest]]) -> list[dict | BaseException]:
    """Commit the batch's messages, then enqueue their jobs from the same thread: the answers, in order."""
    try:
        with database.unit_of_work() as session:
            outcomes = accept_messages(session, requests, rate_card=current_rate_card(session), now=datetime.now(UTC),
                                       cap=cap, shared_short_code=shared_short_code)
    except (IntegrityError, DataError) as error:
        if len(requests) == 1:
            return [error]
        # A row the database refused (a user deleted meanwhile...), before any commit: alone, each request
        # meets only its own fate. Other failures (the connection, even at COMMIT) are not retried: the
        # batch may have been committed, and a retry would store its messages twice.
        log.warning("a batch of %d messages was refused (%r); accepting them one by one", len(requests), error)
        return [outcome for request in requests for outcome in _accept_batch(database, enqueuer, cap, shared_short_code,
                                                                               [request])]
    except Exception as error:
        return [error] * len(requests)
    _enqueue(enqueuer, [outcome[0] for outcome in outcomes if not isinstance(outcome, DomainError)])
    return [outcome if isinstance(outcome, DomainError) else _answer(*outcome) for outcome in outcomes]


def _enqueue(enqueuer: Enqueuer, messages: list[Message]) -> None:
    """One Redis round trip per actor: the send jobs, and the delayed releases of scheduled messages."""
    now = datetime.now(UTC)
    jobs: dict[str, tuple[list[tuple], list[int | None]]] = {SEND_ACTOR: ([], []), RELEASE_ACTOR: ([], [])}
    for message in messages:
        delay_ms = send_delay_ms(message.send_at, now)
        if message.status in ("accepted", "scheduled") and delay_ms is not None:
            args_list, delays = jobs[SEND_ACTOR if message.status == "accepted" else RELEASE_ACTOR]
            args_list.append((message.id,))
            delays.append(delay_ms or None)
    for actor, (args_list, delays) in jobs.items():
        if not args_list:
            continue
        try:
            enqueuer.send_many_blocking(actor, args_list, delays_ms=delays)
        except Exception:
            # The messages are committed: the sweeper enqueues accepted messages whose job never came.
            log.exception("could not enqueue %d %s jobs; the sweeper will", len(args_list), actor)


def _answer(message: Message, estimate: Estimate) -> dict:
    return {
        "id": message.id,
        "status": message.status,
        "estimate": {"segments": estimate.segments, "encoding": estimate.encoding,
                     "credits": format_credits(estimate.credits_total)},
    }


@routes.get("/v1/messages/{message_id}")
@action(READ_ACTIVITY)
async def read_message(request: web.Request) -> web.Response:
    message_id = request.match_info["message_id"]
    principal = request[PRINCIPAL]
    database = request.app[DATABASE]

    def read() -> dict:
        with database.read_only() as session:
            message = get_message(session, message_id, account_id=principal.account_id, user_id=principal.own_only)
            return message_view(message, reprocessed_as=resend_of(session, message.id))

    return json_response(await asyncio.to_thread(read))


_CREDITS = {"type": "string", "examples": ["1.5"]}
_STATUSES = ["accepted", "scheduled", "queued", "sending", "sent", "delivered", "undelivered", "failed", "canceled",
             "parked", "received"]

MESSAGE_SCHEMA = {
    "type": "object",
    "properties": {
        "id": {"type": "string"}, "status": {"type": "string", "enum": _STATUSES},
        "direction": {"type": "string", "enum": ["outbound", "inbound"],
                      "description": "inbound: a text someone sent to one of the account's numbers (a reply)"},
        "campaign_id": {"type": ["string", "null"], "description": "The campaign that sent it"},
        "to": {"type": "string"}, "from": {"type": "string"}, "body": {"type": "string"},
        "media_urls": {"type": "array", "items": {"type": "string"}},
        "user_id": {"type": ["string", "null"]},
        "segments": {"type": "integer", "description": "Twilio's count once known, else the estimate"},
        "encoding": {"type": "string"}, "credits_estimated": _CREDITS,
        "credits_charged": {"type": ["string", "null"], "description": "Set once settled (0: voided)"},
        "rate_card_version": {"type": ["integer", "null"], "description": (
            "The rate card version its charge was priced with (null until settled, when voided, for a toll-free "
            "resend, or when no version had been loaded)")},
        "twilio_sid": {"type": ["string", "null"]},
        "twilio_price": {"type": ["string", "null"], "description": "Twilio's price, for reconciliation"},
        "error_code": {"type": ["integer", "null"]},
        "error_message": {"type": ["string", "null"],
                          "description": "Also why a parked message waits"},
        "reprocessed_as": {"type": ["string", "null"], "description": (
            "The id of this message's toll-free resend: a text from a local number filtered by "
            "carriers (Twilio 30007 or 30034), sent again once from the account's toll-free number "
            "because its toll_free_reprocessing setting is on")},
        "reprocessed_from": {"type": ["string", "null"], "description": (
            "On a toll-free resend: the id of the message it resends. It costs 1 credit per started "
            "160 characters of its body, whatever its segments")},
        "send_at": {"type": ["string", "null"], "format": "date-time"},
        "created_at": {"type": "string", "format": "date-time"},
        "updated_at": {"type": "string", "format": "date-time"},
    },
}

# What a request looks like: the document's examples (clients copy them, the contract tests send them).
_MESSAGE_EXAMPLE = {"to": "+14155550100", "from": "+14155550199", "body": "Open house Sunday at 2pm"}

OPENAPI_PATHS = {
    "/v1/messages": {"post": {
        "operationId": "sendMessage",
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
            "type": "object", "examples": [_MESSAGE_EXAMPLE], "required": ["to", "from", "body"],
            "additionalProperties": False,  # an unknown field is a 422 naming it (a typo'd send_at would send now)
            "properties": {
                "to": {"type": "string", "examples": ["+14155550100"], "description": "E.164 recipient"},
                "from": {"type": "string", "description": (
                    "One of the account's sender numbers, or the deployment's shared short code when the account "
                    "has a keyword on it (settings.shared_short_code): the body is then sent as "
                    "`KEYWORD: body`, and priced, held and charged so, at short-code rates")},
                "body": {"type": "string", "maxLength": 1600, "description": "May be empty with media_urls"},
                "media_urls": {"type": "array", "maxItems": 10, "items": {"type": "string", "format": "uri"},
                               "description": "Makes it an MMS"},
                "user_id": {"type": "string", "description": (
                    "The user sending: a role-`user` user's message is charged to its own credits. Left out with "
                    "a user key: that key's user; a role-`user` key may name no other (403)")},
                "send_at": {"type": "string", "format": "date-time", "description": (
                    "ISO-8601 with offset, at most a year ahead; a time within the last day sends now, one further "
                    "back is a 422")},
                "account_id": {"type": "string", "description": "Only with the operator key: the account to send for"},
            }}}}},
        "responses": {
            "202": {"description": "Accepted", "links": {"getMessage": {
                "operationId": "getMessage", "parameters": {"message_id": "$response.body#/id"}}},
                "content": {"application/json": {"schema": {
                "type": "object", "required": ["id", "status", "estimate"],
                "properties": {
                    "id": {"type": "string"}, "status": {"type": "string", "enum": ["accepted", "scheduled", "parked"]},
                    "estimate": {"type": "object", "properties": {
                        "segments": {"type": "integer"}, "encoding": {"type": "string", "enum": ["GSM-7", "UCS-2"]},
                        "credits": _CREDITS}},
                }}}}},
            "402": problem(402, "The account (or the sending user, from its own credits) cannot pay: `available` "
                                "and `required` credits"),
            "403": problem(403, "A role-`user` key named another user"),
            "404": problem(404, "No such account (operator key) or user"),
            "409": problem(409, "The recipient opted out or is on the do-not-contact list, or the Idempotency-Key "
                                "was used with another request"),
            "422": problem(422, "Invalid number, body, media, user or send_at, or a `from` that is not the "
                                "account's (the shared short code without a keyword on it); `errors` names each "
                                "field"),
            "423": problem(423, "The account is locked (its balance went below zero), or the sending user is (its "
                                "own credits went below zero: until an owner or admin gives it more)"),
            "429": problem(429, "The account's request rate limit, or a new account's daily send cap (`limit`, "
                                "`resets_at`: the account's next local midnight); both with Retry-After"),
        },
    }},
    "/v1/messages/{message_id}": {"get": {
        "operationId": "getMessage",
        "summary": "A message and where it is in its life",
        "parameters": [{"name": "message_id", "in": "path", "required": True, "schema": {"type": "string"}}],
        "responses": {
            "200": {"description": "The message", "content": {"application/json": {"schema": MESSAGE_SCHEMA}}},
            "404": problem(404, "No such message (or another account's, or, to a role-`user` key, another "
                                "user's)"),
        },
    }},
}
MESSAGE_FIELDS = request_fields(OPENAPI_PATHS, "/v1/messages")  # what a POST may name: its documented schema's
