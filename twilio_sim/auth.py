"""HTTP Basic auth as the Twilio API checks it: the sid and auth token of an account it knows, else 401 / 20003.

The account named in the path must be the authenticated one or one of its subaccounts, else 404 / 20404.
"""

import base64
import binascii

from aiohttp import web
from aiohttp.typedefs import Handler

from .errors import bad_credentials, not_found
from .state import accounts_key

TWILIO_API_PREFIX = "/2010-04-01/"


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    if not request.path.startswith(TWILIO_API_PREFIX):
        return await handler(request)
    accounts = request.app[accounts_key]
    sid, token = _basic_credentials(request.headers.get("Authorization", ""))
    account = accounts.authenticate(sid, token)
    if account is None:
        raise bad_credentials()
    if not accounts.may_reach(account, request.match_info.get("account_sid", account.sid)):
        raise not_found(request.path)
    return await handler(request)


def _basic_credentials(header: str) -> tuple[str, str]:
    """(sid, token) of an ``Authorization: Basic ...`` header; empty strings when there is none."""
    scheme, _, encoded = header.partition(" ")
    if scheme != "Basic":
        return "", ""
    try:
        sid, _, token = base64.b64decode(encoded, validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return "", ""
    return sid, token
