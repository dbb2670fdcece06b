"""Twilio's voice webhooks: a call ringing one of our numbers (and its <Dial> action), call progress, recordings
and transcriptions. Each is verified by X-Twilio-Signature against the credentials of the account the call is
about (shared.voice); a forgery is a 403 that changed nothing, a repeat changes nothing either."""

import asyncio
from datetime import UTC, datetime

from aiohttp import web

from shared.messaging.rates import current_rate_card
from shared.twilio.signatures import signed_by_deployment
from shared.voice import inbound
from shared.voice.progress import CONFIRM_CALL_ACTOR, CallReport, CallToConfirm, record_callback

from ..appkeys import DATABASE, ENQUEUER, SETTINGS
from ..errors import Problem
from ..openapi import problem
from ..policy import PUBLIC, action
from .webhooks import _FORBIDDEN, _FORM, _SIGNATURE, _deployment, _int_or_none, _required, _signed_form

routes = web.RouteTableDef()


def _twiml(text: str) -> web.Response:
    return web.Response(text=text, content_type="text/xml")


def _call_id(request: web.Request) -> str | None:
    call_id = request.query.get("call")
    if call_id is not None and not (0 < len(call_id) <= 40):
        raise Problem(400, "Bad Request", "The call parameter is not a call id.")
    return call_id


@routes.post("/webhooks/twilio/voice")
@action(PUBLIC)
async def voice(request: web.Request) -> web.Response:
    signed = await _signed_form(request)
    settings, database = request.app[SETTINGS], request.app[DATABASE]
    base_url, deployment, now = settings.public_base_url, _deployment(settings), datetime.now(UTC)
    if request.query.get("step") == "dialed":
        call_id = _call_id(request)
        if call_id is None:
            raise Problem(400, "Bad Request", "A dial action names its call.")

        def dialed() -> str:
            with database.unit_of_work() as session:
                return inbound.dialed(session, call_id, signed, deployment=deployment, base_url=base_url, now=now)

        answer = await asyncio.to_thread(dialed)
        if not signed_by_deployment(signed, deployment):  # its legs are charged as Twilio records them
            await request.app[ENQUEUER].send(CONFIRM_CALL_ACTOR, call_id)
        return _twiml(answer)
    sid, from_, to = _required(signed.params, "CallSid", "From", "To")

    def answer() -> str:
        with database.unit_of_work() as session:
            return inbound.answer(session, inbound.Ringing(sid, from_, to), signed, deployment=deployment,
                                  rate_card=current_rate_card(session), base_url=base_url, now=now)

    return _twiml(await asyncio.to_thread(answer))


@routes.post("/webhooks/twilio/call-status")
@action(PUBLIC)
async def call_status(request: web.Request) -> web.Response:
    signed = await _signed_form(request)
    sid, status = _required(signed.params, "CallSid", "CallStatus")
    report = CallReport(sid, signed.account_sid, status, _int_or_none(signed.params.get("CallDuration")),
                        str(signed.params.get("AnsweredBy") or "") or None)
    call_id, database, deployment = _call_id(request), request.app[DATABASE], _deployment(request.app[SETTINGS])

    def record() -> str | CallToConfirm | None:
        with database.unit_of_work() as session:
            return record_callback(session, call_id, report, signed, deployment=deployment,
                                   rate_card=current_rate_card(session), now=datetime.now(UTC))

    outcome = await asyncio.to_thread(record)
    if isinstance(outcome, CallToConfirm):  # not enqueued: a 500, and Twilio's retry asks again
        await request.app[ENQUEUER].send(CONFIRM_CALL_ACTOR, outcome.call_id)
    return web.Response(status=200)


@routes.post("/webhooks/twilio/recording")
@action(PUBLIC)
async def recording(request: web.Request) -> web.Response:
    signed = await _signed_form(request)
    _required(signed.params, "CallSid", "RecordingSid")
    call_id = _call_id(request)
    if call_id is None:
        raise Problem(400, "Bad Request", "A recording callback names its call.")
    database, deployment = request.app[DATABASE], _deployment(request.app[SETTINGS])

    def record() -> None:
        with database.unit_of_work() as session:
            inbound.recorded(session, call_id, signed, deployment=deployment, rate_card=current_rate_card(session),
                             now=datetime.now(UTC))

    await asyncio.to_thread(record)
    return web.Response(status=200)


_TWIML = {"description": "TwiML", "content": {"text/xml": {"schema": {"type": "string"}}}}
_CALL_QUERY = {"name": "call", "in": "query", "required": False, "schema": {"type": "string", "maxLength": 40},
               "description": "The call creditq placed or answered (it puts it in the URLs it gives Twilio)"}

OPENAPI_PATHS = {
    "/webhooks/twilio/voice": {"post": {
        "operationId": "receiveTwilioVoice", "summary": "A call to one of the account's numbers (Twilio's voice URL)",
        "description": (
            "Verified against the number called: AccountSid must name its account's own Twilio subaccount (or the "
            "deployment's) and X-Twilio-Signature be signed with its token, else 403. Always answered, also for a "
            "locked account with nothing left: with a forwarding phone, <Dial timeLimit> for the minutes the "
            "overdraft policy allows at the forwarding rate plus the account's grace (inbound_grace_minutes, "
            "default 5); then, unless someone answered, <Record> for a voicemail (transcribed when the number "
            "says so). With `step=dialed&call=` it is the <Dial> action: the forwarded minutes are charged "
            "(3 credits a minute on the default card) and the caller reaches voicemail."),
        "tags": ["webhooks"], "security": [],
        "parameters": [_SIGNATURE, _CALL_QUERY,
                       {"name": "step", "in": "query", "required": False, "schema": {"type": "string",
                                                                                     "enum": ["dialed"]}}],
        "requestBody": _FORM,
        "responses": {"200": _TWIML, "400": problem(400, "CallSid, From or To missing"), "403": _FORBIDDEN},
    }},
    "/webhooks/twilio/call-status": {"post": {
        "operationId": "receiveTwilioCallStatus", "summary": "Twilio call progress callback",
        "description": (
            "Verified against the call it is about (`call=`, else CallSid): the Twilio account it was placed with "
            "must sign it, else 403 and nothing changes. Statuses only move forward, in whatever order they come; "
            "the first final one (completed, busy, no-answer, failed, canceled) settles the call once: "
            "ceil(CallDuration / 60) x the rate per leg, plus the detection charge, the rest of the hold "
            "released. A call creditq does not know is answered 200 and changes nothing. Signed with the token "
            "of the account's own subaccount (which the account holds too), a report's CallDuration is ignored, "
            "and a final one changes nothing by itself: the call is fetched from Twilio and Twilio's answer is "
            "applied."),
        "tags": ["webhooks"], "security": [], "parameters": [_SIGNATURE, _CALL_QUERY], "requestBody": _FORM,
        "responses": {"200": {"description": "recorded (or ignored as a repeat)"},
                      "400": problem(400, "CallSid or CallStatus missing"), "403": _FORBIDDEN},
    }},
    "/webhooks/twilio/recording": {"post": {
        "operationId": "receiveTwilioRecording", "summary": "A voicemail's recording or transcription callback",
        "description": (
            "Verified against the inbound call named by `call=`. A recording charges the voicemail (1 credit), a "
            "transcription (TranscriptionSid) the transcription (4 credits), each once, in either order."),
        "tags": ["webhooks"], "security": [], "parameters": [_SIGNATURE, _CALL_QUERY], "requestBody": _FORM,
        "responses": {"200": {"description": "recorded (or ignored as a repeat)"},
                      "400": problem(400, "CallSid, RecordingSid or call missing"), "403": _FORBIDDEN},
    }},
}
