"""Twilio's webhooks: message status callbacks and inbound messages, both verified by X-Twilio-Signature.

The domain finds the resource a callback is about (the message by MessageSid, the number by To) and
checks the form against the credentials of that resource alone (shared.twilio.signatures); a mismatch
is a 403 that changed nothing. Twilio retries what it gets no 2xx for, so these answer quickly and
treat a repeat as harmless.
"""

import asyncio
import logging
from datetime import UTC, datetime

from aiohttp import web
from multidict import MultiDictProxy
from twilio.twiml.messaging_response import MessagingResponse

from shared.messaging.inbound import Inbound, receive_inbound
from shared.messaging.statuses import record_callback
from shared.twilio.signatures import Credentials, SignedForm

from ..appkeys import DATABASE, ENQUEUER, SETTINGS
from ..bodies import read_form
from ..errors import Problem
from ..fields import whole_number
from ..openapi import problem

log = logging.getLogger(__name__)

SETTLE_ACTOR = "settle_message"  # the workers' actor that charges or voids a finished message
MAX_MEDIA = 10
MAX_FORM_NUMBER = 2**31 - 1

routes = web.RouteTableDef()


async def _signed_form(request: web.Request) -> SignedForm:
    """The form Twilio posted with what its signature covers; 403 at once when there is no signature."""
    form = await read_form(request)
    signature = request.headers.get("X-Twilio-Signature")
    if not signature:
        log.warning("rejected a Twilio webhook on %s: no signature", request.path)
        raise Problem(403, "Forbidden", "The X-Twilio-Signature header is missing.")
    url = request.app[SETTINGS].public_base_url + request.raw_path  # what Twilio signed: behind a proxy, not our host
    return SignedForm(url, form, signature)


def _deployment(request: web.Request) -> Credentials:
    settings = request.app[SETTINGS]
    return Credentials(settings.twilio_account_sid, settings.twilio_auth_token)


def _required(form: MultiDictProxy, *names: str) -> list[str]:
    missing = [name for name in names if not form.get(name)]
    if missing:
        raise Problem(400, "Bad Request", f"Missing form fields: {', '.join(missing)}.")
    return [str(form[name]) for name in names]


def _int_or_none(raw) -> int | None:
    """A count or code Twilio sends as digits; anything else (or past a 32-bit column) is taken as absent."""
    return whole_number(raw, maximum=MAX_FORM_NUMBER) if isinstance(raw, str) else None


@routes.post("/webhooks/twilio/status")
async def status_callback(request: web.Request) -> web.Response:
    signed = await _signed_form(request)
    form = signed.params
    sid, status = _required(form, "MessageSid", "MessageStatus")
    report = dict(
        sid=sid, status=status, num_segments=_int_or_none(form.get("NumSegments")),
        price=form.get("Price") or None, price_unit=form.get("PriceUnit") or None,
        error_code=_int_or_none(form.get("ErrorCode")), error_message=(form.get("ErrorMessage") or None),
    )
    database, deployment = request.app[DATABASE], _deployment(request)

    def record():
        with database.unit_of_work() as session:
            return record_callback(session, signed, deployment=deployment, **report, now=datetime.now(UTC))

    change = await asyncio.to_thread(record)
    if change is not None and change.became_final:
        # Only this request saw the message become final, so a failure here is logged loudly: a repeat
        # of the callback will not enqueue it again; the sweeper finds final messages with a pending hold.
        try:
            await request.app[ENQUEUER].send(SETTLE_ACTOR, change.message_id)
        except Exception:
            log.exception("could not enqueue %s for %s; the sweeper will", SETTLE_ACTOR, change.message_id)
    return web.Response(status=200)


@routes.post("/webhooks/twilio/inbound")
async def inbound_message(request: web.Request) -> web.Response:
    signed = await _signed_form(request)
    form = signed.params
    sid, from_, to = _required(form, "MessageSid", "From", "To")
    media_count = min(_int_or_none(form.get("NumMedia")) or 0, MAX_MEDIA)
    inbound = Inbound(
        sid=sid, from_=from_, to=to, body=str(form.get("Body", "")),
        num_segments=_int_or_none(form.get("NumSegments")),
        media_urls=tuple(str(form[f"MediaUrl{n}"]) for n in range(media_count) if form.get(f"MediaUrl{n}")),
    )
    database, deployment = request.app[DATABASE], _deployment(request)

    def receive():
        with database.unit_of_work() as session:
            return receive_inbound(session, inbound, signed, deployment=deployment, now=datetime.now(UTC),
                                   shared_short_code=request.app[SETTINGS].shared_short_code)

    received = await asyncio.to_thread(receive)
    twiml = MessagingResponse()
    if received is not None and received.reply:
        twiml.message(received.reply)  # STOP gets Twilio's own confirmation, so nothing from us
    return web.Response(text=str(twiml), content_type="text/xml")


_FORM = {"content": {"application/x-www-form-urlencoded": {"schema": {"type": "object"}}}}
_SIGNATURE = {"name": "X-Twilio-Signature", "in": "header", "required": True, "schema": {"type": "string"},
              "description": ("HMAC-SHA1 of the full public URL (PUBLIC_BASE_URL + path + query) and the sorted form "
                              "fields, keyed by the auth token of the Twilio (sub)account that owns the resource the "
                              "callback is about; the form's AccountSid must name that account")}
_FORBIDDEN = problem(403, "no signature, or the form does not name the Twilio account of the resource it is about, "
                          "or is not signed with that account's token; nothing changed")

OPENAPI_PATHS = {
    "/webhooks/twilio/status": {"post": {
        "operationId": "receiveTwilioStatus",
        "summary": "Twilio message status callback",
        "description": ("Verified against the message it is about: the message with MessageSid is found first, "
                        "then the credentials it was sent with (the deployment's TWILIO_ACCOUNT_SID, or its "
                        "account's own Twilio subaccount as they were when it was sent); AccountSid must name "
                        "them and X-Twilio-Signature must be signed with their token, else 403 and nothing "
                        "changes. Then records MessageStatus (with NumSegments, ErrorCode, Price when present). "
                        "Statuses only move forward; duplicates and late ones change nothing. The report that "
                        "makes a message final enqueues its settlement. A sid not stored yet (the callback beat "
                        "the worker) is answered 200 when it is signed with the token of credentials creditq "
                        "holds for its AccountSid (the deployment's, an account's own, a dunning site's): the "
                        "report is kept with that AccountSid and applied when the sid is stored, only if the "
                        "message was sent with that account."),
        "tags": ["webhooks"], "security": [], "parameters": [_SIGNATURE], "requestBody": _FORM,
        "responses": {"200": {"description": "recorded (or ignored as a repeat)"},
                      "400": problem(400, "MessageSid or MessageStatus missing, or a form that cannot be read"),
                      "403": _FORBIDDEN},
    }},
    "/webhooks/twilio/inbound": {"post": {
        "operationId": "receiveTwilioInbound",
        "summary": "Twilio inbound message webhook",
        "description": ("Verified against the number it is about: the account owning the To number is found "
                        "first; AccountSid must name that account's own Twilio subaccount (or the deployment's "
                        "when it has none) and X-Twilio-Signature must be signed with its token, else 403 and "
                        "nothing changes. Then stores the message (free, also for a locked account) with status "
                        "'received'. The whole message STOP, STOPALL, UNSUBSCRIBE, CANCEL, END, QUIT, REVOKE or "
                        "OPTOUT opts the sender out of that account; START, YES or UNSTOP opts them back in; HELP "
                        "or INFO is answered with the account's help_text. To a number no account has: answered "
                        "200 when signed by credentials creditq holds for its AccountSid, and nothing is stored. "
                        "To the deployment's shared short code (SHARED_SHORT_CODE; signed with the deployment's "
                        "credentials): routed by its first word, an account's keyword (`ACME hi`, `ACME STOP`); "
                        "`STOP ACME` opts the sender out of that account only, a bare STOP (or another opt-out "
                        "word) out of every account with a keyword on the code, a bare START back into them (never "
                        "lifting an account's do-not-contact list); a text naming no keyword goes to the account "
                        "that last texted the sender from the code, and when there is none it is answered 200 and "
                        "stored nowhere."),
        "tags": ["webhooks"], "security": [], "parameters": [_SIGNATURE], "requestBody": _FORM,
        "responses": {"200": {"description": "TwiML; a <Message> only for HELP/INFO",
                              "content": {"text/xml": {"schema": {"type": "string"}}}},
                      "400": problem(400, "MessageSid, From or To missing, or a form that cannot be read"),
                      "403": _FORBIDDEN},
    }},
}
