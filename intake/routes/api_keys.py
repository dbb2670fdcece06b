"""An account's API keys: create (the plain key in that answer only), list, revoke."""

import asyncio

from aiohttp import web
from sqlalchemy import select
from sqlalchemy.orm import Session

from shared import api_keys
from shared.db import Database
from shared.errors import NotFound, ValidationFailed
from shared.ledger import allocations
from shared.ledger.accounts import get_account
from shared.ledger.expiry import utc
from shared.models import ApiKey, User

from ..appkeys import CLOCK, DATABASE, KEY_CACHE
from ..auth import require_access
from ..bodies import json_response, read_json
from ..errors import Problem
from ..fields import Fields, QueryFilters
from ..idempotency import idempotent
from ..openapi import problem
from ..policy import MANAGE_KEYS, action, may_manage_key
from ..principal import USER, with_article
from .accounts import _ACCOUNT_PATH, _INSTANT, _json

routes = web.RouteTableDef()


@routes.post("/v1/accounts/{account_id}/api-keys")
@action(MANAGE_KEYS)
@idempotent
async def create_api_key(request: web.Request) -> web.Response:
    account_id = request.match_info["account_id"]
    principal = require_access(request, account_id)
    fields = Fields(await read_json(request))
    name = fields.text("name", required=True, max_length=100)
    scope = fields.choice("scope", api_keys.SCOPES)
    user_id = fields.text("user_id", max_length=40)
    fields.done()
    if scope == api_keys.OPERATOR and not api_keys.may_mint(principal.scope, scope):
        raise Problem(403, "Forbidden", f"A key of scope {principal.scope} cannot create a key of scope {scope}: "
                                        "only keys of its own scope or narrower.")
    if scope == api_keys.OPERATOR:
        raise Problem(422, "Validation failed", "The operator key is CREDITQ_ADMIN_KEY, set in the environment; "
                                                "this API creates account and user keys only.",
                      errors={"scope": f"must be one of {', '.join(api_keys.STORED_SCOPES)}"})
    if user_id is None and scope != api_keys.ACCOUNT and principal.role == USER:
        user_id = principal.user_id  # a role-user key makes keys for its own user only; anyone else naming no user
        # asks for an account key, which an admin may not make (403 below)
    if user_id is None and scope == api_keys.USER:
        raise Problem(422, "Validation failed", "A user key names its user.",
                      errors={"user_id": "is required for a key of scope user"})
    if user_id is not None and scope == api_keys.ACCOUNT:
        raise Problem(422, "Validation failed", "An account key belongs to no user.",
                      errors={"user_id": "must be left out for a key of scope account"})

    def create(database: Database) -> dict:
        with database.unit_of_work() as session:
            get_account(session, account_id)
            role = None if user_id is None else _role_of(session, account_id, user_id)
            if not may_manage_key(principal, user_id, role):
                raise Problem(403, "Forbidden", f"{with_article(principal.role).capitalize()} key may not create "
                                                f"{_whose(user_id, role)} key.")
            key = api_keys.issue_key(session, account_id, name=name, user_id=user_id)
            return {**key_json(api_keys.find_key(session, key)), "key": key}

    return json_response(await asyncio.to_thread(create, request.app[DATABASE]), status=201)


@routes.get("/v1/accounts/{account_id}/api-keys")
@action(MANAGE_KEYS)
async def list_api_keys(request: web.Request) -> web.Response:
    account_id = request.match_info["account_id"]
    principal = require_access(request, account_id)
    QueryFilters(request.query, page_names=()).done()  # one page, no filters: a typo is refused, not lost

    def read(database: Database) -> dict:
        with database.read_only() as session:
            roles = _roles(session, account_id)
            return {"data": [key_json(key) for key in api_keys.list_keys(session, account_id)
                             if may_manage_key(principal, key.user_id, roles.get(key.user_id))],
                    "next_cursor": None}

    return json_response(await asyncio.to_thread(read, request.app[DATABASE]))


@routes.delete("/v1/accounts/{account_id}/api-keys/{key_id}")
@action(MANAGE_KEYS)
async def revoke_api_key(request: web.Request) -> web.Response:
    account_id, raw_id = request.match_info["account_id"], request.match_info["key_id"]
    principal = require_access(request, account_id)
    if not (raw_id.isascii() and raw_id.isdigit()) or len(raw_id) > 18:
        raise Problem(404, "Not found", f"No API key {raw_id} on account {account_id}.")
    now = request.app[CLOCK]()

    def revoke(database: Database) -> None:
        with database.unit_of_work() as session:
            key = session.get(ApiKey, int(raw_id))
            if key is None or not may_manage_key(principal, key.user_id, _roles(session, account_id).get(key.user_id)):
                raise NotFound(f"No API key {raw_id} on account {account_id}.")  # a key it may not touch is not there
            api_keys.revoke_key(session, account_id, int(raw_id), now=now)

    await asyncio.to_thread(revoke, request.app[DATABASE])
    request.app[KEY_CACHE].forget_key(int(raw_id))  # this process at once; the others within the cache's TTL
    return web.Response(status=204)


def _roles(session: Session, account_id: str) -> dict[str, str]:
    """user id -> role, for every user of the account (deleted ones too: their revoked keys stay listed)."""
    return dict(session.execute(select(User.id, User.role).where(User.account_id == account_id)).all())


def _role_of(session: Session, account_id: str, user_id: str) -> str:
    try:
        return allocations.get_user(session, account_id, user_id).role
    except NotFound:
        raise ValidationFailed(f"Invalid key: no user {user_id} in this account.",
                               errors={"user_id": "is not a user of this account"}) from None


def _whose(user_id: str | None, role: str | None) -> str:
    return "an account" if user_id is None else f"{with_article(role)}'s"


def key_json(key: ApiKey) -> dict:
    """Never the key itself: its digest is all that is stored, its prefix too short to use."""
    return {
        "id": str(key.id),
        "name": key.name,
        "prefix": key.prefix,
        "scope": key.scope,
        "user_id": key.user_id,
        "created_at": utc(key.created_at).isoformat(),
        "last_used_at": None if key.last_used_at is None else utc(key.last_used_at).isoformat(),
        "revoked_at": None if key.revoked_at is None else utc(key.revoked_at).isoformat(),
    }


_NULLABLE_INSTANT = {**_INSTANT, "type": ["string", "null"]}
API_KEY_SCHEMA = {"type": "object", "required": ["id", "name", "prefix", "scope", "user_id", "created_at",
                                                 "last_used_at", "revoked_at"], "properties": {
    "id": {"type": "string", "description": "What DELETE takes."},
    "name": {"type": "string"},
    "prefix": {"type": ["string", "null"], "examples": ["cq_live_Xy3k9Q"],
               "description": "The key's first characters, to recognise it; null for keys issued before "
                              "prefixes were kept."},
    "scope": {"type": "string", "enum": list(api_keys.STORED_SCOPES),
              "description": "`account`: acts as the account's owner; `user`: acts as its user, with its role."},
    "user_id": {"type": ["string", "null"], "description": "A user key's user: its sends are charged to that user."},
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
                "new key, switch to it, then revoke the old one. A key with a `user_id` acts as that user: with "
                "its role's rights (see the roles in this document's description), its sends charged to that "
                "user's own credits. Who may create which key: an owner (or the account key) any; an admin keys "
                "of admins and users; a user only its own (a user key that names no user_id makes one for its own "
                "user). A key never creates an operator key (403). Only the SHA-256 digest of the key is stored. "
                "A deleted user's keys are revoked with it."),
            "parameters": [{"name": "Idempotency-Key", "in": "header", "schema": {"type": "string", "maxLength": 200},
                            "description": "The same key and body answer the first response again; another body 409."}],
            "requestBody": {"required": True, **_json({"type": "object", "required": ["name"],
                                                       "additionalProperties": False, "properties": {
                "name": {"type": "string", "maxLength": 100, "examples": ["billing server"]},
                "scope": {"type": "string", "enum": list(api_keys.SCOPES), "description": (
                    "`account` (no user) or `user` (with user_id); follows from user_id when left out. The "
                    "operator key is CREDITQ_ADMIN_KEY, never created here.")},
                "user_id": {"type": "string", "maxLength": 40, "description": (
                    "The user the key acts as. Left out: an account key (which an admin may not make: 403), or, "
                    "with a role-`user` key, a key of the calling key's own user.")}}})},
            "responses": {
                "201": {"description": "the key", **_json({**API_KEY_SCHEMA, "required": [
                    *API_KEY_SCHEMA["required"], "key"], "properties": {
                    **API_KEY_SCHEMA["properties"], "key": {"type": "string", "examples": ["cq_live_..."],
                                                            "description": "The bearer key; shown only here."}}})},
                "400": problem(400, "the body is not a JSON object"),
                "401": problem(401, "no key, or an unknown or revoked one"),
                "403": problem(403, "the scope asked for is wider than the calling key's, or the key's user is "
                                    "one the calling key's role may not make keys for"),
                "404": problem(404, "no such account (or another account's)"),
                "409": problem(409, "the Idempotency-Key was used with another body, or its first request is "
                                    "still running (Retry-After)"),
                "422": problem(422, "invalid name, scope or user_id; `errors` names each field"),
                "429": problem(429, "the account's request rate limit (Retry-After)"),
            },
        },
        "get": {
            "operationId": "listApiKeys",
            "summary": "The account's API keys the calling key may manage, revoked ones included, newest first; "
                       "never a usable key",
            "responses": {
                "200": {"description": "every key", **_json({"type": "object", "properties": {
                    "data": {"type": "array", "items": API_KEY_SCHEMA}, "next_cursor": {"type": "null"}}})},
                "401": problem(401, "no key, or an unknown or revoked one"),
                "404": problem(404, "no such account (or another account's)"),
                "422": problem(422, "a query parameter: the list takes none (one page, no filters)"),
                "429": problem(429, "the account's request rate limit (Retry-After)"),
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
                "404": problem(404, "no such key on this account, another account's, or one the calling key may not "
                                    "manage"),
                "429": problem(429, "the account's request rate limit (Retry-After)"),
            },
        },
    },
}
