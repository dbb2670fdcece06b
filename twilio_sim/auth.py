"""HTTP Basic auth as the Twilio API checks it: account sid + auth token, else 401 / 20003."""

import base64

from aiohttp import web
from aiohttp.typedefs import Handler

from .errors import bad_credentials, not_found
from .state import config_key

TWILIO_API_PREFIX = "/2010-04-01/"


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    if not request.path.startswith(TWILIO_API_PREFIX):
        return await handler(request)
    config = request.app[config_key]
    credentials = f"{config.account_sid}:{config.auth_token}".encode()
    if request.headers.get("Authorization") != "Basic " + base64.b64encode(credentials).decode():
        raise bad_credentials()
    if request.match_info.get("account_sid", config.account_sid) != config.account_sid:
        raise not_found(request.path)
    return await handler(request)
