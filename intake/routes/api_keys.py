"""An account's API keys: create (the plain key in that answer only), list, revoke."""

import asyncio

from aiohttp import web

from shared import api_keys
from shared.db import Database
from shared.ledger.accounts import get_account
from shared.ledger.expiry import utc
from shared.models import ApiKey

from ..appkeys import CLOCK, DATABASE, KEY_CACHE
from ..auth import require_access
from ..bodies import json_response, read_json
from ..errors import Problem
from ..fields import Fields
from ..idempotency import idempotent
from ..openapi import problem
from .accounts import _ACCOUNT_PATH, _INSTANT, _json

routes = web.RouteTableDef()


@routes.post("/v1/accounts/{account_id}/api-keys")
@idempotent
async def create_api_key(request: web.Request) -> web.Response:
    account_id = request.match_info["account_id"]
    principal = require_access(request, account_id)
    fields = Fields(await read_json(request))
    name = fields.text("name", required=True, max_length=100)
    scope = fields.choice("scope", api_keys.SCOPES) or api_keys.ACCOUNT
    fields.done()
    if not api_keys.may_mint(principal.scope, scope):
        raise Problem(403, "Forbidden", f"A key of scope {principal.scope} cannot create a key of scope {scope}: "
                                        "only keys of its own scope or narrower.")
    if scope not in api_keys.STORED_SCOPES:
        raise Problem(422, "Validation failed", "The operator key is CREDITQ_ADMIN_KEY, set in the environment; "
                                                "this API creates account keys only.",
                      errors={"scope": f"must be one of {', '.join(api_keys.STORED_SCOPES)}"})

    def create(database: Database) -> dict:
        with database.unit_of_work() as session:
            get_account(session, account_id)
            key = api_keys.issue_key(session, account_id, name=name, scope=scope)
            return {**key_json(api_keys.find_key(session, key)), "key": key}

    return json_response(await asyncio.to_thread(create, request.app[DATABASE]), status=201)


@routes.get("/v1/accounts/{account_id}/api-keys")
async def list_api_keys(request: web.Request) -> web.Response:
    account_id = request.match_info["account_id"]
    require_access(request, account_id)

    def read(database: Database) -> dict:
        with database.unit_of_work() as session:
            return {"data": [key_json(key) for key in api_keys.list_keys(session, account_id)], "next_cursor": None}

    return json_response(await asyncio.to_thread(read, request.app[DATABASE]))


@routes.delete("/v1/accounts/{account_id}/api-keys/{key_id}")
async def revoke_api_key(request: web.Request) -> web.Response:
    account_id, raw_id = request.match_info["account_id"], request.match_info["key_id"]
    require_access(request, account_id)
    if not (raw_id.isascii() and raw_id.isdigit()) or len(raw_id) > 18:
        raise Problem(404, "Not found", f"No API key {raw_id} on account {account_id}.")
    now = request.app[CLOCK]()

    def revoke(database: Database) -> None:
        with database.unit_of_work() as session:
            api_keys.revoke_key(session, account_id, int(raw_id), now=now)

    await asyncio.to_thread(revoke, request.app[DATABASE])
    request.app[KEY_CACHE].forget_key(int(raw_id))  # this process at once; the others within the cache's TTL
    return web.Response(status=204)


def key_json(key: ApiKey) -> dict:
    """Never the key itself: its digest is all that is stored, its prefix too short to use."""
    return {
        "id": str(key.id),
        "name": key.name,
        "prefix": key.prefix,
        "scope": key.scope,
        "created_at": utc(key.created_at).isoformat(),
        "last_used_at": None if key.last_used_at is None else utc(key.last_used_at).isoformat(),
        "revoked_at": None if key.revoked_at is None else utc(key.revoked_at).isoformat(),
    }


_NULLABLE_INSTANT = {**_INSTANT, "type": ["string", "null"]}
API_KEY_SCHEMA = {"type": "object", "required": ["id", "name", "prefix", "scope", "created_at", "last_used_at",
                                                 "revoked_at"], "properties": {
    "id": {"type": "string", "description": "What DELETE takes."},
    "name": {"type": "string"},
    "prefix": {"type": ["string", "null"], "examples": ["cq_live_Xy3k9Q"],
               "description": "The key's first characters, to recognise it; null for keys issued before "
                              "prefixes were kept."},
    "scope": {"type": "string", "enum": list(api_keys.STORED_SCOPES)},
    "created_at": _INSTANT,
    "last_used_at": {**_NULLABLE_INSTANT, "description": "To the minute (written at most once a minute)."},
    "revoked_at": _NULLABLE_INSTANT,
}}
_KEY_PATH = {"name": "key_id", "in": "path", "required": True, "schema": {"type": "string"}}

OPENAPI_PATHS = {
    "/v1/accounts/{account_id}/api-keys": {
        "parameters": [_ACCOUNT_PATH],
        "post": {
            "operationId": "createApiKey",
            "summary": "Create an API key; the key itself is in this answer only",
            "description": (
                "An account may hold several live keys at once, so a client rotates without downtime: create a "
                "new key, switch to it, then revoke the old one. A key creates only keys of its own scope or "
                "narrower: an account key never creates an operator key (403). Only the SHA-256 digest of the key "
                "is stored."),
            "parameters": [{"name": "Idempotency-Key", "in": "header", "schema": {"type": "string", "maxLength": 200},
                            "description": "The same key and body answer the first response again; another body 409."}],
            "requestBody": {"required": True, **_json({"type": "object", "required": ["name"],
                                                       "additionalProperties": False, "properties": {
                "name": {"type": "string", "maxLength": 100, "examples": ["billing server"]},
                "scope": {"type": "string", "enum": list(api_keys.SCOPES), "default": api_keys.ACCOUNT,
                          "description": "Only `account` keys are created here; the operator key is "
                                         "CREDITQ_ADMIN_KEY."}}})},
            "responses": {
                "201": {"description": "the key", **_json({**API_KEY_SCHEMA, "required": [
                    *API_KEY_SCHEMA["required"], "key"], "properties": {
                    **API_KEY_SCHEMA["properties"], "key": {"type": "string", "examples": ["cq_live_..."],
                                                            "description": "The bearer key; shown only here."}}})},
                "400": problem(400, "the body is not a JSON object"),
                "401": problem(401, "no key, or an unknown or revoked one"),
                "403": problem(403, "the scope asked for is wider than the calling key's"),
                "404": problem(404, "no such account (or another account's)"),
                "409": problem(409, "the Idempotency-Key was used with another body, or its first request is "
                                    "still running (Retry-After)"),
                "422": problem(422, "invalid name or scope; `errors` names each field"),
                "429": problem(429, "the calling key's rate limit (Retry-After)"),
            },
        },
        "get": {
            "operationId": "listApiKeys",
            "summary": "The account's API keys, revoked ones included, newest first; never a usable key",
            "responses": {
                "200": {"description": "every key", **_json({"type": "object", "properties": {
                    "data": {"type": "array", "items": API_KEY_SCHEMA}, "next_cursor": {"type": "null"}}})},
                "401": problem(401, "no key, or an unknown or revoked one"),
                "404": problem(404, "no such account (or another account's)"),
                "429": problem(429, "the calling key's rate limit (Retry-After)"),
            },
        },
    },
    "/v1/accounts/{account_id}/api-keys/{key_id}": {
        "parameters": [_ACCOUNT_PATH, _KEY_PATH],
        "delete": {
            "operationId": "revokeApiKey",
            "summary": "Revoke a key: it answers 401 on every web process within 5 seconds",
            "description": (
                "Revoking an already revoked key changes nothing. A key may revoke itself, and the last live key of "
                "an account may be revoked: the operator can then create a new one for it."),
            "responses": {
                "204": {"description": "revoked"},
                "401": problem(401, "no key, or an unknown or revoked one"),
                "404": problem(404, "no such key on this account (or another account's)"),
                "429": problem(429, "the calling key's rate limit (Retry-After)"),
            },
        },
    },
}
