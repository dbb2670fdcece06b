"""Users of an account and their credits: owners and admins share the pool, users get their own."""

import asyncio
from datetime import datetime, timezone

from aiohttp import web

from shared import api_keys
from shared.db import Database
from shared.errors import ValidationFailed
from shared.ledger import allocations, book
from shared.ledger.accounts import get_account
from shared.ledger.expiry import utc
from shared.messaging.phone_numbers import parse_e164
from shared.models import User
from shared.money import format_credits

from ..appkeys import DATABASE, KEY_CACHE
from ..auth import require_access
from ..bodies import json_response, query_limit, read_json
from ..cursors import decode_cursor, page_of
from ..fields import Fields, QueryFilters
from ..idempotency import idempotent
from ..openapi import list_operation, problem, query_filter
from ..policy import MANAGE_USERS, action, may_manage_user
from .accounts import _ACCOUNT_PATH, _CREDITS, _INSTANT, _SIGNED_CREDITS, _json

routes = web.RouteTableDef()
SHARED = "shared"


@routes.get("/v1/accounts/{account_id}/users")
@action(MANAGE_USERS)
async def list_users(request: web.Request) -> web.Response:
    account_id = request.match_info["account_id"]
    require_access(request, account_id)
    limit = query_limit(request)
    before_id = decode_cursor(request, text_ids=True)
    filters = QueryFilters(request.query)
    role = filters.choice("role", allocations.ROLES)
    filters.done()

    def read(database: Database) -> dict:
        with database.read_only() as session:
            get_account(session, account_id)
            expired = book.lapsed(session, account_id, now=datetime.now(timezone.utc))
            rows = allocations.list_users(session, account_id, role=role, limit=limit + 1, before_id=before_id)
            return page_of(request, rows, limit, lambda user: user_json(user, expired=expired.get(user.id, 0)))

    return json_response(await asyncio.to_thread(read, request.app[DATABASE]))


@routes.post("/v1/accounts/{account_id}/users")
@action(MANAGE_USERS)
@idempotent
async def create_user(request: web.Request) -> web.Response:
    account_id = request.match_info["account_id"]
    principal = require_access(request, account_id)
    body = await read_json(request)
    fields = Fields(body)
    name = fields.text("name", required=True)
    email = fields.text("email", required=True, max_length=320)  # its form: allocations.create_user
    phone = _phone(fields)
    role = fields.choice("role", allocations.ROLES, required=True)
    if body.get("monthly_credits") == SHARED:  # as the API shows owners and admins: they share the pool
        fields.text("monthly_credits")
        monthly = None
    else:
        monthly = fields.credits("monthly_credits")
    fields.done()
    may_manage_user(principal, role)
    now = datetime.now(timezone.utc)

    def create(database: Database) -> dict:
        with database.unit_of_work() as session:
            return user_json(allocations.create_user(session, account_id, name=name, email=email, phone=phone,
                                                     role=role, monthly_credits=monthly, now=now))

    return json_response(await asyncio.to_thread(create, request.app[DATABASE]), status=201)


@routes.get("/v1/accounts/{account_id}/users/{user_id}")
@action(MANAGE_USERS)
async def get_user(request: web.Request) -> web.Response:
    account_id, user_id = request.match_info["account_id"], request.match_info["user_id"]
    require_access(request, account_id)

    def read(database: Database) -> dict:
        with database.read_only() as session:
            expired = book.lapsed(session, account_id, now=datetime.now(timezone.utc))
            return user_json(allocations.get_user(session, account_id, user_id), expired=expired.get(user_id, 0))

    return json_response(await asyncio.to_thread(read, request.app[DATABASE]))


@routes.patch("/v1/accounts/{account_id}/users/{user_id}")
@action(MANAGE_USERS)
async def patch_user(request: web.Request) -> web.Response:
    account_id, user_id = request.match_info["account_id"], request.match_info["user_id"]
    principal = require_access(request, account_id)
    fields = Fields(await read_json(request))
    monthly = fields.credits("monthly_credits")
    total = fields.credits("total_credits")
    fields.done()
    now = datetime.now(timezone.utc)

    def patch(database: Database) -> dict:
        with database.unit_of_work() as session:
            may_manage_user(principal, allocations.get_user(session, account_id, user_id).role)
            return user_json(allocations.update_user(session, account_id, user_id, now=now, monthly_credits=monthly,
                                                     total_credits=total))

    return json_response(await asyncio.to_thread(patch, request.app[DATABASE]))


@routes.delete("/v1/accounts/{account_id}/users/{user_id}")
@action(MANAGE_USERS)
async def delete_user(request: web.Request) -> web.Response:
    account_id, user_id = request.match_info["account_id"], request.match_info["user_id"]
    principal = require_access(request, account_id)
    now = datetime.now(timezone.utc)

    def delete(database: Database) -> list[int]:
        with database.unit_of_work() as session:
            may_manage_user(principal, allocations.get_user(session, account_id, user_id).role)
            allocations.delete_user(session, account_id, user_id, now=now)
            return api_keys.revoke_account_keys(session, account_id, now=now, user_id=user_id)

    for key_id in await asyncio.to_thread(delete, request.app[DATABASE]):
        request.app[KEY_CACHE].forget_key(key_id)  # this process at once; the others within the cache's TTL
    return web.Response(status=204)


def _phone(fields: Fields) -> str | None:
    raw = fields.text("phone", max_length=40)
    if raw is None:
        return None
    try:
        return parse_e164(raw, field="phone")
    except ValidationFailed as error:
        fields.fail("phone", error.errors.get("phone", str(error)))
        return None


def user_credits_json(user, *, expired: int = 0) -> dict:
    """The credits part of a user (a User row, less what of it `expired` and is not written off yet, or a
    ledger.UserCredits, which already leaves that out)."""
    return {
        "id": user.id,
        "name": user.name,
        "role": user.role,
        "monthly_credits": SHARED if user.monthly_credits is None else format_credits(user.monthly_credits),
        "total_credits": format_credits(user.balance - expired),
        "held": format_credits(user.held),
        "available": format_credits(user.balance - expired - user.held),
        "locked": user.balance - expired < 0,
    }


def user_json(user: User, *, expired: int = 0) -> dict:
    """A user as the API shows it; `expired`: its credits that expired and are not written off yet."""
    return {**user_credits_json(user, expired=expired), "email": user.email, "phone": user.phone,
            "created_at": utc(user.created_at).isoformat()}


_MONTHLY = {"oneOf": [_CREDITS, {"const": SHARED}],
            "description": "Credits the user gets each cycle; \"shared\" for owners and admins (the pool)."}
USER_CREDITS_SCHEMA = {"type": "object", "properties": {
    "id": {"type": "string"}, "name": {"type": "string"}, "role": {"type": "string", "enum": list(allocations.ROLES)},
    "monthly_credits": _MONTHLY,
    "total_credits": {**_SIGNED_CREDITS, "description": "The user's own credits now (held included); below zero "
                                                        "while it is locked."},
    "held": _CREDITS, "available": _SIGNED_CREDITS,
    "locked": {"type": "boolean", "description": (
        "A role-`user` user whose own credits went below zero (a settlement cost more than its hold): its sends "
        "answer 423 until an owner or admin gives it credits back to zero or above.")},
}}
USER_SCHEMA = {"type": "object", "properties": {
    **USER_CREDITS_SCHEMA["properties"], "email": {"type": "string"}, "phone": {"type": ["string", "null"]},
    "created_at": _INSTANT,
}}
_USER_PATH = {"name": "user_id", "in": "path", "required": True, "schema": {"type": "string"}}

# What a request looks like: the document's examples (clients copy them, the contract tests send them).
_NEW_USER_EXAMPLE = {"name": "Ada", "email": "ada@example.com", "role": "user", "monthly_credits": "0"}
_USER_CHANGE_EXAMPLE = {"monthly_credits": "0"}

OPENAPI_PATHS = {
    "/v1/accounts/{account_id}/users": {
        "parameters": [_ACCOUNT_PATH],
        "get": list_operation("listUsers", "The account's users", USER_SCHEMA, filters=[
            query_filter("role", "Users of this role.", {"type": "string", "enum": list(allocations.ROLES)})]),
        "post": {
            "operationId": "createUser",
            "summary": "Add a user",
            "description": "monthly_credits can be at most the plan's monthly credits minus the phone numbers' "
                           "monthly cost minus the other users' monthly credits (422 names the maximum).",
            "parameters": [{"name": "Idempotency-Key", "in": "header", "schema": {"type": "string"}}],
            "requestBody": {"required": True, **_json({"type": "object", "examples": [_NEW_USER_EXAMPLE],
                                                       "required": ["name", "email", "role"],
                                                       "additionalProperties": False, "properties": {
                "name": {"type": "string"}, "email": {"type": "string"},
                "phone": {"type": "string", "description": "E.164"},
                "role": {"type": "string", "enum": list(allocations.ROLES)}, "monthly_credits": _MONTHLY}})},
            "responses": {"201": {"description": "the user", **_json(USER_SCHEMA), "links": {
                operation_id: {"operationId": operation_id, "parameters": {
                    "account_id": "$request.path.account_id", "user_id": "$response.body#/id"}}
                for operation_id in ("getUser", "updateUser", "deleteUser")}},
                          "404": problem(404, "no such account"),
                          "409": problem(409, "Idempotency-Key reused"),
                          "422": problem(422, "invalid, or more than can be assigned")},
        },
    },
    "/v1/accounts/{account_id}/users/{user_id}": {
        "parameters": [_ACCOUNT_PATH, _USER_PATH],
        "get": {"operationId": "getUser", "summary": "A user",
                "responses": {"200": {"description": "the user", **_json(USER_SCHEMA)},
                              "404": problem(404, "no such user")}},
        "patch": {
            "operationId": "updateUser",
            "summary": "Change a user's monthly credits, or move credits so it holds total_credits now",
            "description": "total_credits can be at most the user's credits plus the pool's available credits; "
                           "422 names the maximum.",
            "requestBody": {"required": True, **_json({"type": "object", "examples": [_USER_CHANGE_EXAMPLE],
                                                       "additionalProperties": False, "properties": {
                "monthly_credits": _CREDITS, "total_credits": _CREDITS}})},
            "responses": {"200": {"description": "the user", **_json(USER_SCHEMA)},
                          "404": problem(404, "no such user"),
                          "422": problem(422, "more than can be assigned")},
        },
        "delete": {"operationId": "deleteUser", "summary": "Delete a user; its remaining credits return to the pool "
                                                           "(or the pool pays its debt) and its API keys are revoked",
                   "responses": {"204": {"description": "deleted"}, "404": problem(404, "no such user"),
                                 "409": problem(409, "its sends still hold credits")}},
    },
}
