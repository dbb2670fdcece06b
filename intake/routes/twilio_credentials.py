"""PUT /v1/accounts/{id}/twilio-credentials: the account's own Twilio (sub)account, proven with Twilio once."""

import asyncio
import logging
from datetime import UTC, datetime
from functools import partial

from aiohttp import web

from shared.messaging.credentials import replace_twilio_credentials
from shared.twilio.errors import TransientTwilioError
from shared.twilio.gateway import account_status

from ..appkeys import DATABASE, ENQUEUER, SETTINGS
from ..auth import require_access
from ..bodies import json_response, read_json
from ..errors import Problem
from ..openapi import problem
from ..policy import CONFIGURE, action
from .messages import SEND_ACTOR

log = logging.getLogger(__name__)

routes = web.RouteTableDef()


@routes.put("/v1/accounts/{account_id}/twilio-credentials")
@action(CONFIGURE)
async def put_twilio_credentials(request: web.Request) -> web.Response:
    account_id = request.match_info["account_id"]
    require_access(request, account_id)
    payload = await read_json(request)
    try:
        released = await asyncio.to_thread(
            replace_twilio_credentials, request.app[DATABASE], account_id, payload.get("account_sid"),
            payload.get("auth_token"), account_status=partial(account_status, request.app[SETTINGS]),
            now=datetime.now(UTC))
    except TransientTwilioError:
        raise Problem(503, "Twilio unavailable", "Twilio could not confirm the credentials just now; nothing was "
                      "stored. Try again.") from None
    for message_id in released:
        try:
            await request.app[ENQUEUER].send(SEND_ACTOR, message_id)
        except Exception:
            log.exception("could not enqueue %s for %s; the sweeper will", SEND_ACTOR, message_id)
            break
    return json_response({"account_id": account_id, "account_sid": payload.get("account_sid"),
                          "sending_blocked_reason": None, "released_messages": len(released)})


# What a request looks like: the document's examples (clients copy them, the contract tests send them).
_DEPLOYMENT_CREDENTIALS_EXAMPLE = {"account_sid": None, "auth_token": None}

OPENAPI_PATHS = {
    "/v1/accounts/{account_id}/twilio-credentials": {"put": {
        "operationId": "setTwilioCredentials",
        "summary": "Set the account's own Twilio credentials (null for the deployment's)",
        "description": ("The credentials are proven once before they are stored: Twilio is asked for the account "
                        "account_sid names, with auth_token (a fetch of the Account resource). A made-up "
                        "account_sid, a wrong token or an account that is not active is refused with 422; when "
                        "Twilio cannot answer, 503 and nothing is stored. Twilio callbacks about this account's "
                        "messages and numbers are then believed only when they name this account_sid and are "
                        "signed with this token; messages already sent keep answering to the credentials they "
                        "were sent with. Replacing the credentials lifts a block set when Twilio rejected the old "
                        "ones (20003) and releases the messages parked by it. The auth token is stored "
                        "encrypted (CREDITQ_SECRET_KEY) and never shown again."),
        "parameters": [{"name": "account_id", "in": "path", "required": True, "schema": {"type": "string"}}],
        "requestBody": {"required": True, "content": {"application/json": {"schema": {
            "type": "object", "examples": [_DEPLOYMENT_CREDENTIALS_EXAMPLE],
            "properties": {"account_sid": {"type": ["string", "null"], "pattern": "^AC.{32}$"},
                           "auth_token": {"type": ["string", "null"]}}}}}},
        "responses": {
            "200": {"description": "Stored", "content": {"application/json": {"schema": {
                "type": "object", "properties": {"account_id": {"type": "string"},
                                                 "account_sid": {"type": ["string", "null"]},
                                                 "sending_blocked_reason": {"type": "null"},
                                                 "released_messages": {"type": "integer"}}}}}},
            "404": problem(404, "No such account"),
            "422": problem(422, "Only one of the two, a malformed account_sid, or credentials Twilio does not accept "
                                "(unknown account_sid, wrong auth_token, account not active)"),
            "503": problem(503, "Twilio could not be asked; nothing was stored, try again"),
        },
    }},
}
