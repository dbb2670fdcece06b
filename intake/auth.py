"""Bearer authentication (the operator key, or a live stored key looked up by its digest), then the key's rate limit,
then the role policy (intake.policy): the route's declared action, for the key's role and account."""

import asyncio
import hmac

from aiohttp import web

from shared import logs
from shared.api_keys import find_live_digest, hash_key, note_use

from .appkeys import CLOCK, DATABASE, KEY_CACHE, PRINCIPAL, RATE_LIMITER, SETTINGS
from .errors import Problem
from .policy import action_of, authorize, is_page
from .principal import OPERATOR, OWNER, Principal


@web.middleware
async def auth_middleware(request: web.Request, handler):
    declared = action_of(request)
    if is_page(request):
        return await handler(request)  # a console page: signed in by its session (intake.console.session)
    if declared is not None and declared.public or isinstance(request.match_info.http_exception,
                                                                web.HTTPMethodNotAllowed):
        return await handler(request)  # a wrong method is answered 405 to anyone: the document lists every route
    header = request.headers.get("Authorization", "")
    scheme, _, key = header.partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        raise Problem(401, "Unauthorized", "Send 'Authorization: Bearer <key>'.")
    if not key.isascii():  # keys are ASCII; other bytes arrive as surrogates no digest or query can take
        raise Problem(401, "Unauthorized", "The API key is not valid.")
    principal = await principal_for(request.app, key.strip())
    await request.app[RATE_LIMITER].check(principal)
    request[PRINCIPAL] = principal
    if principal.account_id is not None and request.match_info.get("account_id") is None:
        logs.bind(account_id=principal.account_id)  # the request's log context restores it when the request ends
    if declared is not None:  # else no route: aiohttp's 404
        authorize(principal, declared, request.match_info.get("account_id"))
    return await handler(request)


async def principal_for(app: web.Application, key: str) -> Principal:
    """The principal a bearer key authenticates (the operator's, or a live stored key's); 401 otherwise."""
    if hmac.compare_digest(key.encode(), app[SETTINGS].admin_key.encode()):
        return OPERATOR
    return await principal_for_digest(app, hash_key(key))


async def principal_for_digest(app: web.Application, digest: str) -> Principal:
    """The same by the key's SHA-256 digest (a console session keeps only that): the operator's while the
    operator key is still the one configured, else a stored key that is still live, through the key cache, so a
    revoked key stops within the cache's TTL here as for the API; 401 otherwise."""
    if hmac.compare_digest(digest.encode(), hash_key(app[SETTINGS].admin_key).encode()):
        return OPERATOR
    principal = app[KEY_CACHE].get(digest)
    if principal is None:
        database, now = app[DATABASE], app[CLOCK]()

        def lookup() -> Principal | None:
            with database.read_only() as session:  # a lookup never waits for another tenant's bulk write
                live = find_live_digest(session, digest, now=now)
            if live is None:
                return None
            if live.use_to_note:  # at most once a minute per key
                with database.unit_of_work() as session:
                    note_use(session, live.id, now=now)
            return Principal(account_id=live.account_id, key_id=live.id, scope=live.scope, user_id=live.user_id,
                             role=live.role or OWNER)

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


def listed_account(request: web.Request) -> str:
    """The account a top-level route (/v1/messages, /v1/campaigns, /v1/opt-outs) acts on: the key's own; the
    operator names one with `?account_id=` (an account key naming another account gets 404)."""
    principal = request[PRINCIPAL]
    named = request.query.get("account_id")
    if principal.is_operator:
        if not named:
            raise Problem(422, "Validation failed", "The operator key must name the account: ?account_id=.",
                          errors={"account_id": "is required with the operator key"})
        return named
    if named is not None:
        require_access(request, named)
    return principal.account_id
