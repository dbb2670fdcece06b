"""Bearer authentication (the operator key, or a live stored key looked up by its digest), then the key's rate limit."""

import asyncio
import hmac

from aiohttp import web

from shared.api_keys import find_live_key, hash_key, note_use

from .appkeys import CLOCK, DATABASE, KEY_CACHE, PRINCIPAL, RATE_LIMITER, SETTINGS
from .errors import Problem
from .principal import OPERATOR, Principal

PUBLIC_PATHS = ("/healthz", "/metrics", "/v1/openapi.json")
PUBLIC_PREFIXES = ("/webhooks/", "/billing/")  # signed by their sender, or pages for a customer's browser


@web.middleware
async def auth_middleware(request: web.Request, handler):
    if request.path in PUBLIC_PATHS or request.path.startswith(PUBLIC_PREFIXES):
        return await handler(request)
    header = request.headers.get("Authorization", "")
    scheme, _, key = header.partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        raise Problem(401, "Unauthorized", "Send 'Authorization: Bearer <key>'.")
    if not key.isascii():  # keys are ASCII; other bytes arrive as surrogates no digest or query can take
        raise Problem(401, "Unauthorized", "The API key is not valid.")
    principal = await _principal_for(request.app, key.strip())
    await request.app[RATE_LIMITER].check(principal)
    request[PRINCIPAL] = principal
    return await handler(request)


async def _principal_for(app: web.Application, key: str) -> Principal:
    if hmac.compare_digest(key.encode(), app[SETTINGS].admin_key.encode()):
        return OPERATOR
    digest = hash_key(key)
    principal = app[KEY_CACHE].get(digest)
    if principal is None:
        database, now = app[DATABASE], app[CLOCK]()

        def lookup() -> Principal | None:
            with database.read_only() as session:  # a lookup never waits for another tenant's bulk write
                live = find_live_key(session, key, now=now)
            if live is None:
                return None
            if live.use_to_note:  # at most once a minute per key
                with database.unit_of_work() as session:
                    note_use(session, live.id, now=now)
            return Principal(account_id=live.account_id, key_id=live.id, scope=live.scope)

        principal = await asyncio.to_thread(lookup)
        if principal is None:
            raise Problem(401, "Unauthorized", "The API key is not valid (unknown or revoked).")
        app[KEY_CACHE].put(digest, principal)
    return principal


def require_access(request: web.Request, account_id: str) -> Principal:
    """An account key touching another account learns nothing: 404, as if it did not exist."""
    principal = request[PRINCIPAL]
    if not principal.can_access(account_id):
        raise Problem(404, "Not found", f"No account {account_id}.")
    return principal


def require_operator(request: web.Request) -> None:
    if not request[PRINCIPAL].is_operator:
        raise Problem(403, "Forbidden", "Only the operator key may do this.")
