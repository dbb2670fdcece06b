"""Twilio's reports of a call's progress: verified, applied in any order and any number of times, and the call
settled once, on the first report that says it ended.

A status only moves forward (a `ringing` after a `completed` changes nothing); the final one settles: started
minutes of CallDuration x the rate per leg (+ the flat machine-detection charge of a number called), the rest of
the hold released. The settlement's ledger key is the call's, so a repeated report never charges twice.
"""

from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from shared.db import Database
from shared.errors import CallbackRejected, NotFinalYet
from shared.events.outbox import emit
from shared.ledger import book
from shared.messaging.credentials import credentials_keeping
from shared.messaging.phone_numbers import country_of
from shared.messaging.rates import RateCard
from shared.models import Account, Call
from shared.twilio.errors import NOT_FOUND, PermanentTwilioError
from shared.twilio.gateway import TwilioCall
from shared.twilio.signatures import Credentials, SignedForm, credentials_of
from shared.voice.calls import FINAL_STATUSES, call_view
from shared.voice.inbound import charge_forwarded, end_unknown
from shared.voice.pricing import CallPrice

_RANK = {"accepted": 0, "parked": 0, "queued": 1, "initiated": 2, "ringing": 3, "in-progress": 4,
         **dict.fromkeys(FINAL_STATUSES, 5)}
TWILIO_FINAL = frozenset({"completed", "busy", "no-answer", "failed", "canceled"})
TWILIO_STATUSES = frozenset({"queued", "initiated", "ringing", "in-progress"}) | TWILIO_FINAL  # what a callback says
CONFIRM_CALL_ACTOR = "confirm_call_status"


@dataclass(frozen=True)
class CallReport:
    """What Twilio says of a call: in a status callback, a create's answer or a fetch."""

    call_sid: str
    account_sid: str
    status: str
    duration: int | None = None
    answered_by: str | None = None


@dataclass(frozen=True)
class CallToConfirm:
    """A final report signed with the token of the account's own subaccount, which the tenant holds too: nothing of
    it applied; what Twilio says of the call is asked (`confirm_call`) and applied instead."""

    call_id: str


def early_report(call: TwilioCall) -> CallReport:
    return CallReport(call.sid, call.account_sid, call.status, call.duration, call.answered_by)


def record_callback(session: Session, call_id: str | None, report: CallReport, signed: SignedForm, *,
                    deployment: Credentials, rate_card: RateCard, now: datetime) -> str | CallToConfirm | None:
    """Apply a status callback about our call `call_id` (from the URL we gave Twilio; None: found by CallSid).

    Raises CallbackRejected unless the form names the Twilio account the call was placed with (the deployment's or
    the account's own) and is signed with its token, and is about that call's sid. None: a call we do not know,
    answered quietly when signed by credentials we hold for it. Signed with the account's own token, a report moves
    only a status that decides no money (its CallDuration ignored) of a call whose sid is stored; a final one is
    CallToConfirm.
    """
    call = (session.get(Call, call_id, with_for_update=True) if call_id
            else session.scalars(select(Call).where(Call.twilio_sid == report.call_sid).with_for_update()).first())
    if call is None:
        return None
    account = session.get(Account, call.account_id)
    credentials = credentials_of(signed.account_sid, own_sid=account.twilio_account_sid,
                                 own_token=account.twilio_auth_token, deployment=deployment)
    if (not signed.signed_by(credentials) or (call.twilio_account_sid not in (None, signed.account_sid))
            or call.twilio_sid not in (None, report.call_sid)):
        raise CallbackRejected("The callback does not come from the Twilio account this call was placed with.")
    if report.status not in TWILIO_STATUSES:  # ours alone (skipped, parked...): no callback moves a call there
        return call.status
    if credentials != deployment:  # the account's own token: it could have signed this itself
        if report.status in TWILIO_FINAL:
            return CallToConfirm(call.id)
        if call.twilio_sid is None:  # its sid comes from Twilio's answer to the create, not from the account
            return call.status
        report = replace(report, duration=None)
    return apply_report(session, call.id, report, rate_card=rate_card, now=now)


def confirm_call(database: Database, call_id: str, *, gateway_for: Callable, rate_card: RateCard,
                 now: datetime) -> str:
    """Apply what Twilio says of a call once it says final (CallToConfirm); raises NotFinalYet before. An inbound
    call's forwarded legs are charged from Twilio's record of them, under the key its <Dial> action uses, as soon as
    they have ended (the call may go on to voicemail)."""
    with database.read_only() as session:
        call = session.get(Call, call_id)
        if call.twilio_sid is None:
            raise NotFinalYet(f"call {call_id} has no sid yet")
        account = session.get(Account, call.account_id)
        gateway = gateway_for(*credentials_keeping(call.twilio_account_sid, account))
        sid, inbound_call, time_limit = call.twilio_sid, call.direction == "inbound", call.time_limit
        deletable = kept_by_tenant(call, gateway_for(None, None).account_sid)
    if inbound_call:
        found = fetch_inbound_or_gone(gateway, sid, time_limit, tenant_may_delete=deletable)
        if found is None:
            with database.unit_of_work() as session:
                return end_unknown(session, call_id, now)
        fetched, legs = found
        if fetched.status in TWILIO_FINAL or (legs and all(leg.status in TWILIO_FINAL for leg in legs)):
            with database.unit_of_work() as session:
                charge_forwarded(session, call_id, legs, now)
    else:
        fetched = fetch_call_or_gone(gateway, sid, time_limit)
    if fetched.status not in TWILIO_FINAL:
        raise NotFinalYet(f"Twilio says call {sid} is {fetched.status!r}")
    with database.unit_of_work() as session:
        return apply_report(session, call_id, early_report(fetched), rate_card=rate_card, now=now)


def kept_by_tenant(call: Call, deployment_sid: str) -> bool:
    """Whether the call's record is kept in a Twilio account of the tenant's (its own, now or before), which the tenant
    may delete records from: any but the deployment's (`deployment_sid`)."""
    return call.twilio_account_sid not in (None, deployment_sid)


def fetch_call_or_gone(gateway, sid: str, time_limit: int | None) -> TwilioCall:
    """Twilio's record of a call placed with the sid it answered. One it no longer has was deleted by the Twilio
    account that owns it (creditq deletes none), after Twilio placed it: taken as completed after its time limit,
    what its hold covers, so deleting records never makes calls free."""
    try:
        return gateway.fetch_call(sid)
    except PermanentTwilioError as error:
        if error.code != NOT_FOUND:
            raise
    return TwilioCall(sid, "", "completed", time_limit or 0, None)


def fetch_inbound_or_gone(gateway, sid: str, time_limit: int | None, *,
                          tenant_may_delete: bool) -> tuple[TwilioCall, list[TwilioCall]] | None:
    """Twilio's record of an inbound call and of its forwarded legs. A record the tenant may delete
    (`tenant_may_delete`; creditq deletes none) that is gone never makes a call free: the call is taken as completed
    and its forwarded leg as talked for its whole time limit, or, when only the legs are gone from a forwarded call
    that has ended, for as long as the call lasted (a ring the tenant forged with its own token costs the tenant
    alone). A record in the deployment's account that is gone: None, Twilio never had the call."""
    try:
        parent = gateway.fetch_call(sid)
    except PermanentTwilioError as error:
        if error.code != NOT_FOUND:
            raise
        if not tenant_may_delete:
            return None
        parent = TwilioCall(sid, "", "completed", time_limit, None)
    legs = gateway.legs_of(sid)
    if tenant_may_delete and time_limit and not legs and parent.status in TWILIO_FINAL:
        talked = time_limit if parent.duration is None else min(parent.duration, time_limit)
        legs = [TwilioCall(f"{sid}:forwarded", "", "completed", talked, None)]
    return parent, legs


def apply_report(session: Session, call_id: str, report: CallReport, *, rate_card: RateCard,
                 now: datetime) -> str:
    """Store the sid if it is the first we hear of it, move the status forward, settle on a final one; the call's
    status after it."""
    call = session.get(Call, call_id, with_for_update=True)
    if call.twilio_sid is None:
        call.twilio_sid, call.twilio_account_sid = report.call_sid, report.account_sid
    if report.answered_by:
        call.answered_by = report.answered_by
    if _RANK.get(report.status, 0) > _RANK[call.status]:
        call.status, call.updated_at = report.status, now
        if report.status in TWILIO_FINAL and call.direction == "outbound":
            call.duration_seconds = report.duration or 0
        elif report.status in TWILIO_FINAL:  # inbound: its parts were charged as they came
            _ended(session, call, now)
    if call.status in TWILIO_FINAL and call.credits_charged is None and call.direction == "outbound":
        settle_call(session, call, rate_card=rate_card, now=now)
    return call.status


def settle_call(session: Session, call: Call, *, rate_card: RateCard, now: datetime) -> None:
    """Charge what the call talked (the sweeper also calls this for a call Twilio never placed), release the rest."""
    minutes, charge = call_price_of(call, rate_card).charge(call.duration_seconds or 0,
                                                            placed=call.twilio_sid is not None)
    if call.hold_id is not None:
        if charge > 0:
            book.settle(session, call.hold_id, charge, reference=call.id, idempotency_key=f"call:{call.id}:charge",
                        now=now)
        else:
            book.void(session, call.hold_id, now=now)
    call.minutes_billed, call.credits_charged, call.updated_at = minutes, charge, now
    _ended(session, call, now)


def _ended(session: Session, call: Call, now: datetime) -> None:
    session.flush()
    emit(session, "call.completed", account_id=call.account_id, key=f"call.completed:{call.id}",
         data=call_view(call), now=now)


def call_price_of(call: Call, rate_card: RateCard) -> CallPrice:
    """The price the call was accepted at (its stored rate), with today's flat machine-detection charge."""
    flat = rate_card.price("answering_machine_detection", country=country_of(call.to)) if call.machine_detection else 0
    return CallPrice(per_minute=call.rate * call.legs, flat=flat)
