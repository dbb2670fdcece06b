"""Bearer authentication: the operator key, or an account key looked up by its digest."""

import asyncio
import hmac

from aiohttp import web

from shared.api_keys import account_for_key

from .appkeys import DATABASE, KEY_CACHE, PRINCIPAL, SETTINGS
from .errors import Problem
from .principal import OPERATOR, Principal

PUBLIC_PATHS = ("/healthz", "/metrics", "/v1/openapi.json")
PUBLIC_PREFIXES = ("/webhooks/",)
_KEY_CACHE_SIZE = 10_000


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
    request[PRINCIPAL] = await _principal_for(request.app, key.strip())
    return await handler(request)


async def _principal_for(app: web.Application, key: str) -> Principal:
    if hmac.compare_digest(key.encode(), app[SETTINGS].admin_key.encode()):
        return OPERATOR
    cache = app[KEY_CACHE]
    account_id = cache.get(key)
    if account_id is None:
        database = app[DATABASE]

        def lookup() -> str | None:
            with database.read_only() as session:
                return account_for_key(session, key)

        account_id = await asyncio.to_thread(lookup)
        if account_id is None:
            raise Problem(401, "Unauthorized", "The API key is not valid.")
        if len(cache) >= _KEY_CACHE_SIZE:
            cache.clear()
        cache[key] = account_id
    return Principal(account_id=account_id)


def require_access(request: web.Request, account_id: str) -> Principal:
    """An account key touching another account learns nothing: 404, as if it did not exist."""
    principal = request[PRINCIPAL]
    if not principal.can_access(account_id):
        raise Problem(404, "Not found", f"No account {account_id}.")
    return principal


def require_operator(request: web.Request) -> None:
    if not request[PRINCIPAL].is_operator:
        raise Problem(403, "Forbidden", "Only the operator key may do this.")
