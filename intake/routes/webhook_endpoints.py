"""An account's webhook endpoints (shared.events): create (the secret in that answer only), list, read, change,
delete, rotate the secret; each endpoint's delivery log and replay."""

import asyncio
import logging

from aiohttp import web

from shared.db import Database
from shared.events import delivery as deliveries
from shared.events import endpoints
from shared.events.addresses import MAX_URL_LENGTH, check_url
from shared.events.types import ALL, EVENT_TYPES
from shared.ledger.accounts import get_account
from shared.ledger.expiry import utc
from shared.models import WebhookDelivery, WebhookEndpoint, WebhookEvent

from ..appkeys import CLOCK, DATABASE, ENQUEUER, SETTINGS
from ..auth import require_access
from ..bodies import json_response, query_limit, read_json
from ..cursors import decode_cursor, encode_cursor
from ..fields import Fields, QueryFilters
from ..idempotency import idempotent
from ..openapi import list_operation, problem, query_filter
from ..policy import CONFIGURE, action
from .accounts import _ACCOUNT_PATH, _INSTANT, _json

log = logging.getLogger(__name__)

routes = web.RouteTableDef()

DELIVER_ACTOR = "deliver_webhook"


@routes.post("/v1/accounts/{account_id}/webhook-endpoints")
@action(CONFIGURE)
@idempotent
async def create_webhook_endpoint(request: web.Request) -> web.Response:
    account_id = request.match_info["account_id"]
    require_access(request, account_id)
    fields = Fields(await read_json(request))
    url = fields.text("url", required=True, max_length=MAX_URL_LENGTH)
    events = fields.strings("events", required=True)
    description = fields.text("description", max_length=200)
    fields.done()
    events = endpoints.event_types(events)
    await _checked(request, url)
    now = request.app[CLOCK]()

    def create(database: Database) -> dict:
        with database.unit_of_work() as session:
            get_account(session, account_id)
            endpoint, secret = endpoints.create_endpoint(session, account_id, url=url, events=events,
                                                         description=description, now=now)
            return {**endpoint_json(endpoint, events), "secret": secret}

    return json_response(await asyncio.to_thread(create, request.app[DATABASE]), status=201)


@routes.get("/v1/accounts/{account_id}/webhook-endpoints")
@action(CONFIGURE)
async def list_webhook_endpoints(request: web.Request) -> web.Response:
    account_id = request.match_info["account_id"]
    require_access(request, account_id)
    QueryFilters(request.query, page_names=()).done()  # one page, no filters: a typo is refused, not lost

    def read(database: Database) -> dict:
        with database.read_only() as session:
            get_account(session, account_id)
            return {"data": [endpoint_json(endpoint, endpoints.subscribed_types(session, endpoint.id))
                             for endpoint in endpoints.list_endpoints(session, account_id)], "next_cursor": None}

    return json_response(await asyncio.to_thread(read, request.app[DATABASE]))


@routes.get("/v1/accounts/{account_id}/webhook-endpoints/{endpoint_id}")
@action(CONFIGURE)
async def get_webhook_endpoint(request: web.Request) -> web.Response:
    account_id, endpoint_id = _ids(request)

    def read(database: Database) -> dict:
        with database.read_only() as session:
            endpoint = endpoints.get_endpoint(session, account_id, endpoint_id)
            return endpoint_json(endpoint, endpoints.subscribed_types(session, endpoint.id))

    return json_response(await asyncio.to_thread(read, request.app[DATABASE]))


@routes.patch("/v1/accounts/{account_id}/webhook-endpoints/{endpoint_id}")
@action(CONFIGURE)
async def update_webhook_endpoint(request: web.Request) -> web.Response:
    account_id, endpoint_id = _ids(request)
    fields = Fields(await read_json(request))
    url = fields.text("url", max_length=MAX_URL_LENGTH)
    events = fields.strings("events")
    description = fields.text("description", max_length=200)
    enabled = fields.boolean("enabled")
    fields.done()
    events = None if events is None else endpoints.event_types(events)
    await _checked(request, url)
    now = request.app[CLOCK]()

    def update(database: Database) -> dict:
        with database.unit_of_work() as session:
            endpoint = endpoints.update_endpoint(session, account_id, endpoint_id, url=url, events=events,
                                                 description=description, enabled=enabled, now=now)
            return endpoint_json(endpoint, endpoints.subscribed_types(session, endpoint.id))

    return json_response(await asyncio.to_thread(update, request.app[DATABASE]))


@routes.delete("/v1/accounts/{account_id}/webhook-endpoints/{endpoint_id}")
@action(CONFIGURE)
async def delete_webhook_endpoint(request: web.Request) -> web.Response:
    account_id, endpoint_id = _ids(request)
    now = request.app[CLOCK]()

    def delete(database: Database) -> None:
        with database.unit_of_work() as session:
            endpoints.delete_endpoint(session, account_id, endpoint_id, now=now)

    await asyncio.to_thread(delete, request.app[DATABASE])
    return web.Response(status=204)


@routes.post("/v1/accounts/{account_id}/webhook-endpoints/{endpoint_id}/rotate-secret")
@action(CONFIGURE)
async def rotate_webhook_secret(request: web.Request) -> web.Response:
    account_id, endpoint_id = _ids(request)
    now = request.app[CLOCK]()

    def rotate(database: Database) -> dict:
        with database.unit_of_work() as session:
            endpoint, secret = endpoints.rotate_secret(session, account_id, endpoint_id, now=now)
            return {**endpoint_json(endpoint, endpoints.subscribed_types(session, endpoint.id)), "secret": secret}

    return json_response(await asyncio.to_thread(rotate, request.app[DATABASE]))


@routes.get("/v1/accounts/{account_id}/webhook-endpoints/{endpoint_id}/deliveries")
@action(CONFIGURE)
async def list_webhook_deliveries(request: web.Request) -> web.Response:
    account_id, endpoint_id = _ids(request)
    limit = query_limit(request)
    before = decode_cursor(request, text_ids=True)
    filters = QueryFilters(request.query)
    status = filters.choice("status", DELIVERY_STATUSES)
    filters.done()

    def read(database: Database) -> dict:
        with database.read_only() as session:
            endpoints.get_endpoint(session, account_id, endpoint_id)
            rows = deliveries.list_deliveries(session, endpoint_id, limit=limit + 1, before=before, status=status)
        page = rows[:limit]
        return {"data": [delivery_json(row, event_type) for row, event_type in page],
                "next_cursor": encode_cursor(request, page[-1][0].id) if len(rows) > limit else None}

    return json_response(await asyncio.to_thread(read, request.app[DATABASE]))


@routes.post("/v1/accounts/{account_id}/webhook-endpoints/{endpoint_id}/deliveries/{delivery_id}/replay")
@action(CONFIGURE)
async def replay_webhook_delivery(request: web.Request) -> web.Response:
    account_id, endpoint_id = _ids(request)
    delivery_id = request.match_info["delivery_id"]
    now = request.app[CLOCK]()
    settings = request.app[SETTINGS].webhooks

    def replay(database: Database) -> dict:
        with database.unit_of_work() as session:
            endpoints.get_endpoint(session, account_id, endpoint_id)
            row = deliveries.replay(session, account_id, endpoint_id, delivery_id, settings=settings, now=now)
            return delivery_json(row, session.get(WebhookEvent, row.event_id).type)

    answer = await asyncio.to_thread(replay, request.app[DATABASE])
    try:
        await request.app[ENQUEUER].send(DELIVER_ACTOR, delivery_id)
    except Exception:
        log.exception("could not enqueue %s for %s; the sweeper will", DELIVER_ACTOR, delivery_id)
    return json_response(answer, status=202)


def _ids(request: web.Request) -> tuple[str, str]:
    account_id = request.match_info["account_id"]
    require_access(request, account_id)
    return account_id, request.match_info["endpoint_id"]


async def _checked(request: web.Request, url: str | None) -> None:
    """The URL's checks (a DNS lookup) off the event loop; a 422 on `url` when it may not be called."""
    if url is None:
        return
    development = request.app[SETTINGS].development
    await asyncio.to_thread(check_url, url, development=development)


def _iso(instant) -> str | None:
    return None if instant is None else utc(instant).isoformat()


def endpoint_json(endpoint: WebhookEndpoint, events: list[str]) -> dict:
    """Never the secret: it is shown on create and rotate only."""
    return {"id": endpoint.id, "account_id": endpoint.account_id, "url": endpoint.url,
            "description": endpoint.description, "events": events, "enabled": endpoint.enabled,
            "disabled_reason": endpoint.disabled_reason, "created_at": _iso(endpoint.created_at),
            "updated_at": _iso(endpoint.updated_at)}


def delivery_json(row: WebhookDelivery, event_type: str) -> dict:
    return {"id": row.id, "event_id": row.event_id, "event_type": event_type, "status": row.status,
            "attempts": row.attempts, "next_attempt_at": _iso(row.next_attempt_at),
            "retry_until": _iso(row.retry_until), "last_attempt_at": _iso(row.last_attempt_at),
            "response_status": row.response_status, "error": row.error, "created_at": _iso(row.created_at)}


DELIVERY_STATUSES = ("pending", "succeeded", "failed")
_NULLABLE_INSTANT = {**_INSTANT, "type": ["string", "null"]}
_EVENT_TYPE_NAMES = [*EVENT_TYPES, ALL]
ENDPOINT_SCHEMA = {"type": "object", "required": ["id", "account_id", "url", "description", "events", "enabled",
                                                  "disabled_reason", "created_at", "updated_at"], "properties": {
    "id": {"type": "string", "examples": ["we_01jd2x7k9q8r5t3v1w0y2z4a6b"]},
    "account_id": {"type": "string"},
    "url": {"type": "string", "format": "uri"},
    "description": {"type": ["string", "null"]},
    "events": {"type": "array", "items": {"type": "string", "enum": _EVENT_TYPE_NAMES}},
    "enabled": {"type": "boolean"},
    "disabled_reason": {"type": ["string", "null"], "description": (
        "Why creditq stopped delivering to it: every delivery failed for the whole retry window (3 days) with no "
        "success in between. Null while enabled, or when disabled by hand. PATCH `enabled: true` clears it.")},
    "created_at": _INSTANT,
    "updated_at": _INSTANT,
}}
_WITH_SECRET = {**ENDPOINT_SCHEMA, "required": [*ENDPOINT_SCHEMA["required"], "secret"], "properties": {
    **ENDPOINT_SCHEMA["properties"], "secret": {
        "type": "string", "pattern": "^whsec_", "examples": ["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"],
        "description": "The signing secret; shown only in this answer (create, rotate-secret), stored encrypted."}}}
DELIVERY_SCHEMA = {"type": "object", "required": ["id", "event_id", "event_type", "status", "attempts",
                                                  "next_attempt_at", "retry_until", "last_attempt_at",
                                                  "response_status", "error", "created_at"], "properties": {
    "id": {"type": "string", "examples": ["whd_01jd2x7k9q8r5t3v1w0y2z4a6b"]},
    "event_id": {"type": "string", "description": "The `webhook-id` header and the body's `id`: the same on every "
                                                  "attempt and replay, to de-duplicate by."},
    "event_type": {"type": "string", "enum": list(EVENT_TYPES)},
    "status": {"type": "string", "enum": list(DELIVERY_STATUSES)},
    "attempts": {"type": "integer", "minimum": 0},
    "next_attempt_at": _NULLABLE_INSTANT,
    "retry_until": {**_INSTANT, "description": "The end of its retry window: it ends `failed` after it."},
    "last_attempt_at": _NULLABLE_INSTANT,
    "response_status": {"type": ["integer", "null"], "description": "The endpoint's HTTP status at the last attempt."},
    "error": {"type": ["string", "null"], "description": "What went wrong at the last attempt (the answer's status "
                                                         "and start, a timeout, a refused address)."},
    "created_at": _INSTANT,
}}
_EVENT_LIST = "; ".join(f"`{name}`: {meaning}" for name, meaning in EVENT_TYPES.items())
_DELIVERY_TEXT = (
    "Each event is POSTed as JSON `{\"type\", \"id\", \"created_at\", \"data\"}` (`data`: the message, payment, "
    "campaign, or the account's figures, as the event's type says) and signed per the Standard Webhooks "
    "specification: headers `webhook-id` (the event id), `webhook-timestamp` (Unix seconds) and `webhook-signature` "
    "(`v1,` + base64 HMAC-SHA256 of `id.timestamp.body` under the secret); verify with the `standardwebhooks` "
    "package. Any 2xx within the timeout (CREDITQ_WEBHOOK_TIMEOUT_SECONDS, 10 s) is a success; anything else is "
    "retried after 10 s, doubling each time up to 8 hours, for 3 days, then the delivery ends `failed` (and an "
    "endpoint none of whose deliveries succeeded in that time is disabled). Delivery is at least once: "
    "de-duplicate by `webhook-id`. Outside development the URL must be https and resolve to public addresses "
    "only (no loopback, private, link-local or metadata addresses); it is checked when saved and before each "
    "delivery. Events: " + _EVENT_LIST + ".")
_ENDPOINT_PATH = {"name": "endpoint_id", "in": "path", "required": True, "schema": {"type": "string"}}
_ENDPOINT_LINKS = {operation_id: {"operationId": operation_id, "parameters": {
    "account_id": "$response.body#/account_id", "endpoint_id": "$response.body#/id"}}
    for operation_id in ("getWebhookEndpoint", "updateWebhookEndpoint", "listWebhookDeliveries")}
_COMMON = {"401": problem(401, "no key, or an unknown or revoked one"),
           "404": problem(404, "no such endpoint on this account (or another account's)"),
           "429": problem(429, "the calling key's rate limit (Retry-After)")}
_URL = {"type": "string", "format": "uri", "maxLength": MAX_URL_LENGTH,
        "examples": ["https://hooks.example.com/creditq"]}
_EVENTS = {"type": "array", "minItems": 1, "maxItems": 100, "items": {"type": "string", "enum": _EVENT_TYPE_NAMES},
           "examples": [["message.received", "message.delivered"]],
           "description": "The types it takes; `[\"*\"]` takes every type, future ones included."}

OPENAPI_PATHS = {
    "/v1/accounts/{account_id}/webhook-endpoints": {
        "parameters": [_ACCOUNT_PATH],
        "post": {
            "operationId": "createWebhookEndpoint",
            "summary": "Add a webhook endpoint; its signing secret is in this answer only",
            "description": _DELIVERY_TEXT,
            "parameters": [{"name": "Idempotency-Key", "in": "header", "schema": {"type": "string", "maxLength": 200},
                            "description": "The same key and body answer the first response again; another body 409."}],
            "requestBody": {"required": True, **_json({"type": "object", "required": ["url", "events"],
                                                       "additionalProperties": False, "properties": {
                "url": _URL, "events": _EVENTS, "description": {"type": "string", "maxLength": 200}}})},
            "responses": {
                "201": {"description": "the endpoint, with its secret", **_json(_WITH_SECRET), "links": _ENDPOINT_LINKS},
                "404": problem(404, "no such account (or another account's)"),
                "409": problem(409, "the Idempotency-Key was used with another body, or its first request is "
                                    "still running (Retry-After)"),
                "422": problem(422, "a URL that may not be called (not https, a host that does not resolve or "
                                    "resolves to a non-public address), unknown event types, more than 20 "
                                    "endpoints; `errors` names each field"),
                "401": _COMMON["401"], "429": _COMMON["429"],
            },
        },
        "get": {
            "operationId": "listWebhookEndpoints",
            "summary": "The account's webhook endpoints (never their secrets)",
            "responses": {
                "200": {"description": "every endpoint", **_json({"type": "object", "properties": {
                    "data": {"type": "array", "items": ENDPOINT_SCHEMA}, "next_cursor": {"type": "null"}}})},
                "404": problem(404, "no such account (or another account's)"),
                "422": problem(422, "a query parameter: the list takes none (one page, no filters)"),
                "401": _COMMON["401"], "429": _COMMON["429"],
            },
        },
    },
    "/v1/accounts/{account_id}/webhook-endpoints/{endpoint_id}": {
        "parameters": [_ACCOUNT_PATH, _ENDPOINT_PATH],
        "get": {"operationId": "getWebhookEndpoint", "summary": "A webhook endpoint (never its secret)",
                "responses": {"200": {"description": "the endpoint", **_json(ENDPOINT_SCHEMA)}, **_COMMON}},
        "patch": {
            "operationId": "updateWebhookEndpoint",
            "summary": "Change its URL, event types, description, or enable / disable it",
            "description": "`enabled: true` clears `disabled_reason`; events missed meanwhile can be replayed from "
                           "the delivery log.",
            "requestBody": {"required": True, **_json({"type": "object", "additionalProperties": False, "properties": {
                "url": _URL, "events": _EVENTS, "description": {"type": "string", "maxLength": 200},
                "enabled": {"type": "boolean"}}})},
            "responses": {"200": {"description": "the endpoint", **_json(ENDPOINT_SCHEMA)},
                          "422": problem(422, "a URL that may not be called, unknown event types"), **_COMMON},
        },
        "delete": {"operationId": "deleteWebhookEndpoint",
                   "summary": "Remove it: no new events; its pending deliveries end failed",
                   "responses": {"204": {"description": "deleted"}, **_COMMON}},
    },
    "/v1/accounts/{account_id}/webhook-endpoints/{endpoint_id}/rotate-secret": {
        "parameters": [_ACCOUNT_PATH, _ENDPOINT_PATH],
        "post": {"operationId": "rotateWebhookSecret",
                 "summary": "A new signing secret, in this answer only; every delivery from now on is signed with it",
                 "responses": {"200": {"description": "the endpoint with its new secret", **_json(_WITH_SECRET)},
                               **_COMMON}},
    },
    "/v1/accounts/{account_id}/webhook-endpoints/{endpoint_id}/deliveries": {
        "parameters": [_ACCOUNT_PATH, _ENDPOINT_PATH],
        "get": list_operation(
            "listWebhookDeliveries", "The endpoint's delivery log, newest first", DELIVERY_SCHEMA,
            filters=[query_filter("status", "Only deliveries in this status (`failed`: the ones to replay).",
                                  {"type": "string", "enum": list(DELIVERY_STATUSES)})],
            not_found="no such endpoint on this account (or another account's)"),
    },
    "/v1/accounts/{account_id}/webhook-endpoints/{endpoint_id}/deliveries/{delivery_id}/replay": {
        "parameters": [_ACCOUNT_PATH, _ENDPOINT_PATH,
                       {"name": "delivery_id", "in": "path", "required": True, "schema": {"type": "string"}}],
        "post": {"operationId": "replayWebhookDelivery",
                 "summary": "Send the delivery's event again (same event id), with a fresh retry window",
                 "responses": {"202": {"description": "queued", **_json(DELIVERY_SCHEMA)},
                               **{**_COMMON, "404": problem(404, "no such delivery of this endpoint, or another "
                                                                 "account's")}}},
    },
}
