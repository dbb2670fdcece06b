"""Twilio's Account resource: fetch, in Twilio's wire format (shape per shared/twilio/twilio_api_v2010.json).

What a client does to prove its credentials: fetching its own account succeeds only with the right
auth token (the auth middleware answers 401 / 20003 otherwise).
"""

from __future__ import annotations

from aiohttp import web

from .errors import not_found
from .message import API_VERSION
from .state import accounts_key

routes = web.RouteTableDef()


@routes.get(f"/{API_VERSION}/Accounts/{{account_sid}}.json")
async def fetch_account(request: web.Request) -> web.Response:
    account = request.app[accounts_key].get(request.match_info["account_sid"])
    if account is None:
        raise not_found(request.path)
    return web.json_response(account.as_resource())
