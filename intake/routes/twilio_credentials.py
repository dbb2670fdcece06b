"""PUT /v1/accounts/{id}/twilio-credentials: the account's own Twilio (sub)account; fixes a 20003 block."""

import asyncio
import logging
from datetime import UTC, datetime

from aiohttp import web

from shared.messaging.credentials import set_twilio_credentials

from ..appkeys import DATABASE, ENQUEUER
from ..auth import require_access
from ..bodies import json_response, read_json
from ..openapi import problem
from .messages import SEND_ACTOR

log = logging.getLogger(__name__)

routes = web.RouteTableDef()


@routes.put("/v1/accounts/{account_id}/twilio-credentials")
async def put_twilio_credentials(request: web.Request) -> web.Response:
    account_id = request.match_info["account_id"]
    require_access(request, account_id)
    payload = await read_json(request)
    database = request.app[DATABASE]

    def store() -> list[str]:
        with database.unit_of_work() as session:
            return set_twilio_credentials(session, account_id, payload.get("account_sid"),
                                          payload.get("auth_token"), now=datetime.now(UTC))

    released = await asyncio.to_thread(store)
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
        "description": ("Replacing the credentials lifts a block set when Twilio rejected the old ones (20003) "
                        "and releases the messages parked by it. The auth token is never shown again."),
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
            "422": problem(422, "Only one of the two, or a malformed account_sid"),
        },
    }},
}
