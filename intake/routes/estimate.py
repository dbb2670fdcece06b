"""POST /v1/estimate: what a message will cost, for the compose box; creates nothing."""

import asyncio

from aiohttp import web

from shared.db import Database
from shared.messaging.estimate import (
    CHANNELS,
    MAX_MEDIA_URLS,
    MAX_NUMBERS,
    MAX_RECIPIENTS,
    Estimate,
    estimate_message,
    sender_type_of,
)
from shared.messaging.rates import SENDER_TYPES, current_rate_card
from shared.messaging.segments import MAX_BODY_CHARACTERS
from shared.messaging.shared_short_code import keyword_for, prefixed
from shared.voice.broadcasts import MAX_RECIPIENTS as MAX_CALL_RECIPIENTS
from shared.voice.broadcasts import estimate_broadcast

from ..appkeys import DATABASE, PRINCIPAL, SETTINGS
from ..bodies import json_response, read_json
from ..errors import Problem
from ..openapi import problem
from ..policy import SEND, action

VOICE_BROADCAST = "voice_broadcast"
routes = web.RouteTableDef()


@routes.post("/v1/estimate")
@action(SEND)
async def estimate(request: web.Request) -> web.Response:
    payload = await read_json(request)
    if payload.get("channel") == VOICE_BROADCAST:
        unknown = set(payload) - {"channel", "recipients", "expected_minutes", "machine_detection"}
        if unknown:
            raise Problem(422, "Validation failed", f"Not known for a voice broadcast: {', '.join(sorted(unknown))}.",
                          errors={name: "is not a known field for a voice broadcast" for name in sorted(unknown)})
        rate_card = await asyncio.to_thread(current_rate_card, request.app[DATABASE].engine)
        return json_response(estimate_broadcast(payload.get("recipients"), payload.get("expected_minutes"),
                                                payload.get("machine_detection", False),
                                                rate_card=rate_card).as_dict())
    sender = payload.get("from")
    smart_encoding = payload.get("smart_encoding", False)
    if sender is not None and not isinstance(sender, str):
        raise Problem(422, "Validation failed", "from must be a phone number string.",
                      errors={"from": "must be a string"})
    if not isinstance(smart_encoding, bool):
        raise Problem(422, "Validation failed", "smart_encoding must be true or false.",
                      errors={"smart_encoding": "must be a boolean"})
    result = await asyncio.to_thread(estimate_for, request.app[DATABASE], request[PRINCIPAL].account_id, payload,
                                     sender, smart_encoding, request.app[SETTINGS].shared_short_code)
    return json_response(result.as_dict())


def estimate_for(database: Database, account_id: str | None, payload: dict, sender: str | None,
                 smart_encoding: bool, shared_short_code: str | None) -> Estimate:
    """The estimate POST /v1/estimate answers (and the console's compose ticker shows)."""
    sender_type, keyword = "long_code", None
    if sender:
        with database.read_only() as session:
            sender_type = sender_type_of(session, sender, account_id=account_id)
            if account_id is not None:
                keyword = keyword_for(session, account_id, sender, code=shared_short_code)
    return estimate_message(
        prefixed(keyword, payload.get("body", "")),  # what the shared short code sends, and charges for
        to=payload.get("to"),
        recipients=payload.get("recipients"),
        sender_type=sender_type,
        channel=payload.get("channel"),
        media_urls=payload.get("media_urls"),
        smart_encoding=smart_encoding,
        rate_card=current_rate_card(database.engine),
    )


_CREDITS = {"type": "string", "pattern": r"^\d+(\.\d{1,3})?$", "examples": ["1.5"]}

_BROADCAST_ESTIMATE = {"type": "object", "required": ["numbers", "expected_minutes", "credits"], "properties": {
    "numbers": {"type": "integer", "maximum": MAX_CALL_RECIPIENTS}, "expected_minutes": {"type": "integer"},
    "credits_per_minute": _CREDITS, "detection_per_number": _CREDITS, "credits": _CREDITS}}

OPENAPI_PATHS = {
    "/v1/estimate": {
        "post": {
            "operationId": "estimateMessage",
            "summary": "Estimate what a message costs, individually or for a group",
            "description": (
                "Counts SMS segments the way Twilio does (GSM-7: 160 septets, 153 per concatenated segment, "
                "extension characters cost two; one character outside GSM-7 makes the message UCS-2: 70 UTF-16 "
                "units, 67 per segment) and prices them from the deployment's rate card, carrier fees "
                "included. MMS is priced per recipient. Creates nothing; any authenticated caller may use it."
            ),
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": {
                    "type": "object", "examples": [{"body": "Open house Sunday at 2pm", "to": ["+14155550100"]}],
                    "properties": {
                        "body": {"type": "string", "maxLength": MAX_BODY_CHARACTERS,
                                 "description": "The text; may be empty only when media_urls are given."},
                        "to": {"type": "array", "minItems": 1, "maxItems": MAX_NUMBERS,
                               "items": {"type": "string", "examples": ["+14155550100"]},
                               "description": "Recipients in E.164; each is priced by its country."},
                        "recipients": {"type": "integer", "minimum": 1, "maximum": MAX_RECIPIENTS,
                                       "description": "A recipient count in the rate card's home country, "
                                                      "instead of `to` (or equal to its length)."},
                        "from": {"type": "string", "description": "A sender number of the account: its type "
                                                                  "(long code, toll-free, short code) picks the rate. "
                                                                  "The shared short code, for an account with a "
                                                                  "keyword on it: short-code rates, and the body "
                                                                  "counted with its `KEYWORD: ` prefix. "
                                                                  "Otherwise long-code rates apply."},
                        "channel": {"type": "string", "enum": [*CHANNELS, VOICE_BROADCAST],
                                    "description": "Default: mms when media_urls are given, else sms. "
                                                   "voice_broadcast: a voice broadcast to `recipients` numbers, "
                                                   "which then takes only expected_minutes and "
                                                   "machine_detection."},
                        "expected_minutes": {"type": "integer", "minimum": 1, "maximum": 240,
                                             "description": "voice_broadcast: minutes each answered call lasts "
                                                            "(default 1)."},
                        "machine_detection": {"type": "boolean",
                                              "description": "voice_broadcast: the detection charge per number."},
                        "media_urls": {"type": "array", "maxItems": MAX_MEDIA_URLS,
                                       "items": {"type": "string", "format": "uri"}},
                        "smart_encoding": {"type": "boolean", "default": False,
                                           "description": "Apply Twilio's Smart Encoding substitutions first."},
                    },
                }}},
            },
            "responses": {
                "200": {"description": "The estimate: a message's, or a voice broadcast's (numbers x "
                                       "expected_minutes x the broadcast rate + the detection charge per number)",
                        "content": {"application/json": {"schema": {"anyOf": [_BROADCAST_ESTIMATE, {
                    "type": "object",
                    "required": ["characters", "encoding", "segments", "credits_per_recipient", "recipients",
                                 "credits_total", "non_gsm_characters"],
                    "properties": {
                        "characters": {"type": "integer", "description": "Characters (code points) in the body."},
                        "encoding": {"type": "string", "enum": ["GSM-7", "UCS-2"]},
                        "segments": {"type": "integer", "description": "SMS segments per recipient (1 for MMS)."},
                        "credits_per_recipient": {**_CREDITS, "description": "Highest price of one recipient."},
                        "recipients": {"type": "integer"},
                        "credits_total": _CREDITS,
                        "non_gsm_characters": {"type": "array", "items": {"type": "string"},
                                               "description": "Characters that forced UCS-2, each once."},
                        "channel": {"type": "string", "enum": list(CHANNELS)},
                        "sender_type": {"type": "string", "enum": list(SENDER_TYPES)},
                    },
                }]}}}},
                "422": problem(422, "Empty body without media, body over 1,600 characters, an invalid or unpriced "
                                    "number; `errors` names each field (`to[2]`, `body`, ...)"),
            },
        },
    },
}
