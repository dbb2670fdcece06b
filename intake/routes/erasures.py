"""Erasing one phone number's data on request (operator): shared.operations.erasure."""

import asyncio
from dataclasses import asdict

from aiohttp import web

from shared.db import Database
from shared.operations import erasure

from ..appkeys import CLOCK, DATABASE
from ..bodies import json_response, read_json
from ..fields import Fields
from ..openapi import problem
from ..policy import OPERATE, action

routes = web.RouteTableDef()


@routes.post("/v1/erasures")
@action(OPERATE)
async def erase_phone(request: web.Request) -> web.Response:
    fields = Fields(await read_json(request))
    phone = fields.text("phone", required=True, max_length=40)
    fields.done()
    now = request.app[CLOCK]()

    def apply(database: Database) -> dict:
        with database.unit_of_work() as session:
            return asdict(erasure.erase_phone(session, phone, now=now))

    return json_response(await asyncio.to_thread(apply, request.app[DATABASE]))


_COUNT = {"type": "integer", "minimum": 0}
OPENAPI_PATHS = {
    "/v1/erasures": {"post": {
        "operationId": "erasePhone",
        "summary": "Erase one phone number's data, in every account (operator)",
        "description": (
            "Blanks the body, media and the number of every finished message sent to or received from the number, "
            "the number, recording and transcription of every finished call to, from or forwarded to it, the "
            "number in the events written about them and in campaign recipients. The ledger keeps what those "
            "messages and calls cost (no number in it). The number's opt-outs are kept, so it is never texted "
            "again. Messages and calls still on their way are left and counted in `in_flight`: erase again once "
            "they are final. The number may be written as people write it (+1 (415) 555-0100). Erasing a number "
            "twice finds nothing the second time."),
        "requestBody": {"required": True, "content": {"application/json": {"schema": {
            "type": "object", "required": ["phone"], "additionalProperties": False,
            "properties": {"phone": {"type": "string", "maxLength": 40, "examples": ["+14155550100"]}}}}}},
        "responses": {
            "200": {"description": "what was erased, and what was kept", "content": {"application/json": {"schema": {
                "type": "object", "required": ["phone", "messages", "calls", "in_flight", "recipients", "events",
                                               "opt_outs_kept"],
                "properties": {"phone": {"type": "string"}, "messages": _COUNT, "calls": _COUNT, "in_flight": _COUNT,
                               "recipients": _COUNT, "events": _COUNT, "opt_outs_kept": _COUNT}}}}},
            "400": problem(400, "the body is not a JSON object"),
            "422": problem(422, "phone is missing or not a phone number"),
        }}},
}
