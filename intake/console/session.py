"""Who is signed in to the console, and the forms they may post.

A console session is an encrypted, HttpOnly cookie (aiohttp-session's EncryptedCookieStorage, a Fernet key
derived from the first CREDITQ_SECRET_KEY) holding the SHA-256 digest of the key signed in with, never the key, and
the session's CSRF token and a random session id. Every request of a page turns the digest back into a principal
through the API's own lookup and key cache (intake.auth.principal_for_digest): a revoked key ends its sessions
within the cache's 4 s TTL, and a changed operator key ends the operator's. Signing out ends the session on the
server too, not only in the browser: its id is kept in the shared Redis as ended until the cookie would have
expired, so a copy of the cookie taken before is refused as well. While Redis cannot be reached that check passes
(as the rate limits do), and a sign-out then ends the browser's cookie alone, with a warning in the log. Then the
page's declared action is authorized exactly as for the API (intake.policy), and every POST must carry the
session's CSRF token (a form field or the X-CSRF-Token header htmx sends); one that does not is refused with 403
before its handler runs.
"""

import base64
import hashlib
import hmac
import logging
import secrets

import redis
from aiohttp import web
from aiohttp_session import get_session, new_session, session_middleware
from aiohttp_session.cookie_storage import EncryptedCookieStorage
from cryptography.fernet import Fernet

from shared import errors as domain_errors
from shared.api_keys import hash_key
from shared.config import Settings
from shared.logs import Occasionally

from ..appkeys import PRINCIPAL, RATE_LIMITER, REDIS
from ..auth import principal_for, principal_for_digest
from ..bodies import read_form
from ..errors import Problem, is_domain_error
from ..policy import action_of, authorize, is_page
from ..principal import Principal
from ..rate_limit import WARN_EVERY_SECONDS
from .render import CSRF_TOKEN, page

log = logging.getLogger(__name__)

COOKIE_NAME = "creditq_console"
SESSION_SECONDS = 12 * 3600  # a working day; signing in again after it is cheap
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "X-CSRF-Token"
SIGN_IN_PATH = "/sign-in"
ENDED_PREFIX = "creditq:console:ended:"  # + a signed-out session's id, kept SESSION_SECONDS


def console_session_middleware(settings: Settings):
    """aiohttp-session's middleware over the console's cookie (Secure when the public URL is https), for the
    console's pages only: an API call or a webhook has no session, and skips its work."""
    key = hmac.new(base64.urlsafe_b64decode(settings.secret_keys[0]), b"creditq console session",
                   hashlib.sha256).digest()
    storage = EncryptedCookieStorage(Fernet(base64.urlsafe_b64encode(key)), cookie_name=COOKIE_NAME, max_age=SESSION_SECONDS,
                                     httponly=True, samesite="Lax",
                                     secure=settings.public_base_url.startswith("https://"))
    sessions = session_middleware(storage)

    @web.middleware
    async def pages_only(request: web.Request, handler):
        return await sessions(request, handler) if is_page(request) else await handler(request)

    return pages_only


async def sign_in(request: web.Request, key: str) -> None:
    """Start a fresh session (a new cookie and CSRF token, so none set before signing in survives it) for `key`;
    401 Problem when it authenticates no one."""
    await principal_for(request.app, key)
    session = await new_session(request)
    session["digest"] = hash_key(key)
    session["id"] = secrets.token_urlsafe(16)
    session["csrf"] = request[CSRF_TOKEN] = secrets.token_urlsafe(32)


async def signed_in(request: web.Request) -> Principal | None:
    """The session's principal on a public page (the front door), None when no one is signed in."""
    return await _principal(request, await get_session(request))


async def sign_out(request: web.Request) -> None:
    session = await get_session(request)
    session_id = session.get("id")
    if isinstance(session_id, str):
        try:
            await request.app[REDIS].set(ENDED_PREFIX + session_id, 1, ex=SESSION_SECONDS)
        except redis.RedisError as error:
            log.warning("could not record a console sign-out (%s): a copy of its cookie stays valid until it expires",
                        error)
    session.invalidate()


SECURITY_HEADERS = {
    # its own scripts and styles only (htmx adds a style element for its indicators), never framed
    "Content-Security-Policy": "default-src 'self'; style-src 'self' 'unsafe-inline'; frame-ancestors 'none'; "
                               "base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}


@web.middleware
async def console_middleware(request: web.Request, handler):
    """For console pages: the session's principal, the page's action, the CSRF token; errors as pages."""
    if not is_page(request):
        return await handler(request)
    try:
        response = await _page(request, handler)
    except web.HTTPException as redirect:
        redirect.headers.update(SECURITY_HEADERS)
        raise
    if not response.prepared:  # a streamed CSV sent its headers already
        response.headers.update(SECURITY_HEADERS)
    return response


async def _page(request: web.Request, handler) -> web.StreamResponse:
    session = await get_session(request)
    if "csrf" not in session:
        session["csrf"] = secrets.token_urlsafe(32)
    request[CSRF_TOKEN] = session["csrf"]
    try:
        if request.method == "POST":
            await _check_csrf(request, session["csrf"])
        declared = action_of(request)
        if not declared.public:
            principal = await _principal(request, session)
            if principal is None:
                return _to_sign_in(request)
            await request.app[RATE_LIMITER].check(principal)
            request[PRINCIPAL] = principal
            authorize(principal, declared, request.match_info.get("account_id"))
        return await handler(request)
    except Problem as problem:
        return _error_page(request, problem.status, problem.title, problem.detail)
    except Exception as error:
        if not is_domain_error(error):
            raise
        status = 404 if isinstance(error, domain_errors.NotFound) else 409
        return _error_page(request, status, getattr(error, "title", "Refused"), str(error))


async def _check_csrf(request: web.Request, expected: str) -> None:
    sent = request.headers.get(CSRF_HEADER)
    if sent is None and request.content_type in ("application/x-www-form-urlencoded", "multipart/form-data"):
        sent = (await read_form(request)).get(CSRF_FIELD)
    if not isinstance(sent, str) or not hmac.compare_digest(sent.encode(), expected.encode()):
        raise Problem(403, "Forbidden", "This form has expired or did not come from this console: reload the page "
                                        "and send it again.")


async def _principal(request: web.Request, session) -> Principal | None:
    digest, session_id = session.get("digest"), session.get("id")
    if not isinstance(digest, str) or not isinstance(session_id, str):
        return None
    if await _ended(request, session_id):  # a copy of a signed-out session's cookie
        session.invalidate()
        return None
    try:
        return await principal_for_digest(request.app, digest)
    except Problem as problem:
        if problem.status != 401:
            raise
        session.invalidate()  # its key was revoked (or the operator key changed): the session ends
        return None


_REDIS_AWAY = Occasionally(WARN_EVERY_SECONDS)  # this process's warnings that sessions go unchecked


async def _ended(request: web.Request, session_id: str) -> bool:
    """Whether the session was signed out (a copy of its cookie may still come); False while Redis is away, with a
    warning at most every WARN_EVERY_SECONDS, as the rate limits give."""
    try:
        return bool(await request.app[REDIS].exists(ENDED_PREFIX + session_id))
    except redis.RedisError as error:
        if _REDIS_AWAY.due():
            log.warning("could not check console sessions against the signed-out ones (%s); letting them through",
                        error)
        return False


def _to_sign_in(request: web.Request) -> web.Response:
    if request.headers.get("HX-Request"):  # htmx follows this header with a full page load
        return web.Response(status=200, headers={"HX-Redirect": SIGN_IN_PATH})
    raise web.HTTPSeeOther(SIGN_IN_PATH)


def _error_page(request: web.Request, status: int, title: str, detail: str) -> web.Response:
    return page(request, "error.html", {"title": title, "detail": detail}, status=status)
