"""Twilio's webhooks: message status callbacks and inbound messages, both verified by X-Twilio-Signature.

The domain finds the resource a callback is about (the message by MessageSid, the number by To) and
checks the form against the credentials of that resource alone (shared.twilio.signatures); a mismatch
is a 403 that changed nothing. Twilio retries what it gets no 2xx for, so these answer quickly and
treat a repeat as harmless.
"""

import asyncio
import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime

from aiohttp import web
from multidict import MultiDictProxy
from sqlalchemy.exc import SQLAlchemyError
from twilio.twiml.messaging_response import MessagingResponse

from shared.billing.settling import Followups, settle_finished
from shared.config import Settings
from shared.db import Database
from shared.messaging.inbound import Inbound, receive_inbound
from shared.messaging.rates import current_rate_card
from shared.messaging.statuses import Callback, StatusChange, ToConfirm, record_callbacks
from shared.twilio.signatures import Credentials, SignedForm

from ..appkeys import DATABASE, ENQUEUER, SETTINGS
from ..bodies import read_form
from ..enqueue import Enqueuer
from ..errors import Problem
from ..fields import whole_number
from ..group_commit import GroupCommit
from ..openapi import problem
from ..policy import PUBLIC, action

log = logging.getLogger(__name__)

MAX_CALLBACK_BATCH = 200
CALLBACK_WRITERS = 2  # units of work in flight at once (see GroupCommit)
SPARE_AFTER = 0.05  # seconds a callback batch runs before a second writer may start another (see GroupCommit)
# Seconds a callback in a stream waits for company (see GroupCommit): Twilio waits 15 s for our answer, and a batch
# gathered over 30 ms at 600 callbacks a second settles about 18 messages in one commit.
CALLBACK_GATHER = 0.03
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


def _deployment(settings: Settings) -> Credentials:
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
@action(PUBLIC)
async def status_callback(request: web.Request) -> web.Response:
    signed = await _signed_form(request)
    form = signed.params
    sid, status = _required(form, "MessageSid", "MessageStatus")
    callback = Callback(
        signed, sid=sid, status=status, num_segments=_int_or_none(form.get("NumSegments")),
        price=form.get("Price") or None, price_unit=form.get("PriceUnit") or None,
        error_code=_int_or_none(form.get("ErrorCode")), error_message=(form.get("ErrorMessage") or None),
    )
    await request.app[CALLBACK_BATCHER].submit(callback)
    return web.Response(status=200)


class CallbackBatcher(GroupCommit[Callback, StatusChange | ToConfirm | None]):
    """Group commit for status callbacks: the callbacks gathered in a batch are applied in one unit of work, and
    the messages they made final are settled in it too (no job of their own); what the settlements bring
    (resends, notices, recharges) is enqueued after the commit.

    Each callback meets its own fate (an unknown sid is kept for later, a duplicate or a late report changes
    nothing, a forged one is refused with 403); a batch the database refuses is applied again one callback at
    a time: callbacks are idempotent, so that is safe even when the failure came at COMMIT.
    """

    def __init__(self, database: Database, enqueuer: Enqueuer, deployment: Credentials, *,
                 max_batch: int = MAX_CALLBACK_BATCH, writers: int = CALLBACK_WRITERS,
                 spare_after: float | None = SPARE_AFTER, gather: float = CALLBACK_GATHER):
        super().__init__(self.apply_batch, max_batch=max_batch, writers=writers, spare_after=spare_after,
                         gather=gather)
        self._database, self._enqueuer, self._deployment = database, enqueuer, deployment

    def apply_batch(self, callbacks: list[Callback]) -> list[StatusChange | ToConfirm | None | BaseException]:
        try:
            outcomes, followups = self._commit(callbacks)
        except SQLAlchemyError as error:
            if len(callbacks) == 1:
                raise
            log.warning("a batch of %d status callbacks failed (%r); applying them one by one", len(callbacks), error)
            return [outcome for callback in callbacks for outcome in self._one(callback)]
        followups.enqueue(self._enqueuer.broker)
        return outcomes  # a CallbackRejected is raised to its request alone: 403

    def _one(self, callback: Callback) -> list[StatusChange | ToConfirm | None | BaseException]:
        try:
            return self.apply_batch([callback])
        except Exception as error:  # a 500: Twilio retries the callback
            return [error]

    def _commit(self, callbacks: list[Callback]) -> tuple[list, Followups]:
        now = datetime.now(UTC)
        with self._database.unit_of_work() as session:
            outcomes = record_callbacks(session, callbacks, deployment=self._deployment, now=now)
            finished = sorted({(change.account_id, change.message_id) for change in outcomes
                               if isinstance(change, StatusChange) and change.became_final})
            followups = settle_finished(session, [message_id for _, message_id in finished],
                                        rate_card=current_rate_card(session), now=now)
        followups.confirmations = [outcome.sid for outcome in outcomes if isinstance(outcome, ToConfirm)]
        return outcomes, followups


CALLBACK_BATCHER = web.AppKey("callback_batcher", CallbackBatcher)


async def callback_batcher_ctx(app: web.Application) -> AsyncIterator[None]:
    """The batcher's writers run as long as the app serves, each with a connection of their pool (for_batches)."""
    with app[DATABASE].for_batches(CALLBACK_WRITERS) as database:
        batcher = CallbackBatcher(database, app[ENQUEUER], _deployment(app[SETTINGS]), writers=CALLBACK_WRITERS)
        app[CALLBACK_BATCHER] = batcher
        batcher.start()
        yield
        await batcher.close()


@routes.post("/webhooks/twilio/inbound")
@action(PUBLIC)
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
    database, deployment = request.app[DATABASE], _deployment(request.app[SETTINGS])

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
                        "message was sent with that account. A report signed with the token of an account's own "
                        "subaccount or a dunning site's (which the tenant holds too) moves only the status, its "
                        "NumSegments, Price and ErrorCode ignored; a final one changes nothing by itself: the "
                        "message is fetched from Twilio and Twilio's answer is applied and settled."),
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
