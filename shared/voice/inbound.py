"""Calls to the account's numbers: always answered, forwarded, then voicemail with an optional transcription.

Nothing is held: an inbound call rings through even for a locked account with nothing left. The forwarded leg's
<Dial timeLimit> is the minutes the overdraft policy still allows at the forwarding rate plus the account's grace
minutes, so the debt it can leave is bounded. Its cost is charged as Twilio reports it, each part under its own
ledger key (forwarded minutes, the voicemail, the transcription), so the reports may come in any order and any
number of times.
"""

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from shared.errors import CallbackRejected, NotFound, ValidationFailed
from shared.ids import keyed_id
from shared.ledger import book
from shared.messaging.phone_numbers import country_of, parse_e164
from shared.messaging.rates import RateCard
from shared.models import Account, Call, Entry, PhoneNumber
from shared.twilio.gateway import TwilioCall
from shared.twilio.signatures import Credentials, SignedForm, credentials_of, known_credentials, signed_by_deployment
from shared.voice import twiml
from shared.voice.calls import MAX_CALL_MINUTES, holds_number
from shared.voice.pricing import SECONDS_PER_MINUTE, started_minutes

VOICE_PATH = "/webhooks/twilio/voice"
UNCHANGED = object()
RECORDING_PATH = "/webhooks/twilio/recording"


@dataclass(frozen=True)
class Ringing:
    """Twilio asking what to do with a call to one of our numbers."""

    call_sid: str
    from_: str
    to: str


def answer(session: Session, ringing: Ringing, signed: SignedForm, *, deployment: Credentials, rate_card: RateCard,
           base_url: str, now: datetime) -> str:
    """The TwiML for a call that rings one of the account's numbers; raises CallbackRejected for a forgery."""
    number = session.scalars(select(PhoneNumber).where(PhoneNumber.phone == ringing.to)).first()
    if number is None:  # not ours: answered politely when signed by credentials we hold, refused otherwise
        if not any(signed.signed_by(credentials) for credentials in
                   known_credentials(session, signed.account_sid, deployment=deployment)):
            raise CallbackRejected("The callback is not signed by credentials creditq holds.")
        return twiml.hang_up()
    account = _verified(session, number.account_id, signed, deployment)
    # checked when the number was set to forward too: one released and taken back since would ring creditq again,
    # each leg charged by the minute
    forward_to = number.forward_to
    if forward_to and holds_number(session, account.id, forward_to):
        forward_to = None
    call = _inbound_call(session, account, number, forward_to, ringing, signed.account_sid, rate_card, now)
    if forward_to and call.minutes_held:
        return twiml.forward(forward_to, time_limit=call.time_limit,
                             action=f"{base_url}{VOICE_PATH}?call={call.id}&step=dialed")
    return _voicemail_or_hang_up(number, call, base_url)


def dialed(session: Session, call_id: str, signed: SignedForm, *, deployment: Credentials, base_url: str,
           now: datetime) -> str:
    """The forwarded leg ended: charge its started minutes, then voicemail unless someone answered.

    Signed with the account's own subaccount's token (which the tenant holds too), DialCallDuration is not taken:
    the legs are charged from Twilio's record by the confirmation the webhook enqueues (progress.confirm_call), or
    by the sweeper.
    """
    call = _call(session, call_id, signed, deployment)
    status = str(signed.params.get("DialCallStatus", ""))
    seconds = _seconds(signed.params.get("DialCallDuration"))
    minutes = started_minutes(seconds)
    # the sweeper's reconciliation may have charged the legs already
    if call.minutes_billed is None and signed_by_deployment(signed, deployment):
        _charge(session, call, minutes * call.rate, f"call:{call.id}:forwarded", now)
        call.duration_seconds, call.minutes_billed = seconds, minutes
    number = session.scalars(select(PhoneNumber).where(PhoneNumber.phone == call.to)).first()
    if status == "completed" or number is None:
        return twiml.hang_up()
    return _voicemail_or_hang_up(number, call, base_url)


def recorded(session: Session, call_id: str, signed: SignedForm, *, deployment: Credentials, rate_card: RateCard,
             now: datetime) -> None:
    """A voicemail's recording (+1) or its transcription (+4) callback, whichever comes first."""
    call = _call(session, call_id, signed, deployment)
    if signed.params.get("TranscriptionSid"):
        call.transcription = str(signed.params.get("TranscriptionText") or "")
        item, key = "transcription", f"call:{call.id}:transcription"
    else:
        call.recording_url = str(signed.params.get("RecordingUrl") or "") or None
        item, key = "voicemail", f"call:{call.id}:voicemail"
    _charge(session, call, rate_card.price(item, country=country_of(call.to)), key, now)


def charge_forwarded(session: Session, call_id: str, legs: list[TwilioCall], now: datetime) -> Call:
    """Charge the started minutes of an inbound call's forwarded legs as Twilio records them, under the key its
    <Dial> action uses (so one of the two charges); the call, locked."""
    call = session.get(Call, call_id, with_for_update=True)
    seconds = sum(leg.duration or 0 for leg in legs if leg.status == "completed")
    if call.minutes_billed is None:
        minutes = started_minutes(seconds)
        _charge(session, call, minutes * call.rate, f"call:{call.id}:forwarded", now)
        call.duration_seconds, call.minutes_billed = seconds, minutes
    return call


def end_unknown(session: Session, call_id: str, now: datetime) -> str:
    """An inbound call Twilio says it never had: `failed`, charged nothing, no longer looked for."""
    call = session.get(Call, call_id, with_for_update=True)
    if call.status == "in-progress" and call.minutes_billed is None:
        call.status, call.error_message, call.updated_at = "failed", "Twilio has no such call", now
        call.duration_seconds, call.minutes_billed = 0, 0
    return call.status


def set_call_minutes(session: Session, account_id: str, *, call_max_minutes: int | None = None,
                     inbound_grace_minutes: int | None = None) -> Account:
    """The account's default outgoing call length and its inbound grace minutes."""
    account = session.get(Account, account_id, with_for_update=True)
    if account is None:
        raise NotFound(f"No account {account_id}.")
    if call_max_minutes is not None:
        account.call_max_minutes = call_max_minutes
    if inbound_grace_minutes is not None:
        account.inbound_grace_minutes = inbound_grace_minutes
    return account


def set_number_voice(session: Session, account_id: str, raw_phone: str, *, forward_to: object = UNCHANGED,
                     voicemail: bool | None = None, transcribe: bool | None = None) -> PhoneNumber:
    """Where a number's inbound calls are forwarded (None: nowhere), and whether callers may leave a voicemail,
    transcribed."""
    phone = parse_e164(raw_phone, field="phone")
    number = session.scalars(select(PhoneNumber).where(PhoneNumber.account_id == account_id,
                                                       PhoneNumber.phone == phone).with_for_update()).first()
    if number is None:
        raise NotFound(f"{phone} is not a number of account {account_id}.")
    if forward_to is not UNCHANGED:
        number.forward_to = None if forward_to is None else _forward_target(session, account_id, forward_to)
    if voicemail is not None:
        number.voicemail = voicemail
    if transcribe is not None:
        number.transcribe = transcribe
    return number


def _forward_target(session: Session, account_id: str, raw: object) -> str:
    """Where a number may forward: a phone that is not one of the account's own numbers, which would ring creditq
    again, and forward again, each leg charged by the minute until the caller hangs up."""
    target = parse_e164(raw, field="forward_to")
    if holds_number(session, account_id, target):
        reason = "is a number of this account: its calls would come back here; forward to a phone outside creditq"
        raise ValidationFailed(f"forward_to {reason}", errors={"forward_to": reason})
    return target


def _inbound_call(session: Session, account: Account, number: PhoneNumber, forward_to: str | None, ringing: Ringing,
                  twilio_account_sid: str, rate_card: RateCard, now: datetime) -> Call:
    """The call's row, made once per CallSid (Twilio may ask twice), with the minutes it may talk forwarded to
    `forward_to` (None: not forwarded)."""
    call_id = keyed_id("call", ringing.call_sid)
    call = session.get(Call, call_id, with_for_update=True)
    if call is not None:
        return call
    rate = rate_card.price("call_forwarding", country=country_of(number.phone))
    minutes = allowed_minutes(session, account, rate) + account.inbound_grace_minutes if forward_to else 0
    minutes = min(minutes, MAX_CALL_MINUTES)
    call = Call(id=call_id, account_id=account.id, direction="inbound", to=number.phone, from_=ringing.from_,
                connect_to=forward_to, machine_detection=False, max_minutes=minutes, minutes_held=minutes,
                time_limit=minutes * SECONDS_PER_MINUTE, legs=1, rate=rate, status="in-progress",
                credits_estimated=minutes * rate, twilio_sid=ringing.call_sid, twilio_account_sid=twilio_account_sid,
                attempts=0, created_at=now, updated_at=now)
    try:
        with session.begin_nested():
            session.add(call)
    except IntegrityError:  # the same ring, asked twice at once
        return session.get(Call, call_id, with_for_update=True)
    return call


def allowed_minutes(session: Session, account: Account, rate: int) -> int:
    """The whole forwarding minutes the account's overdraft policy still allows (postpaid: a call's maximum)."""
    if account.overdraft_policy == "postpaid":
        return MAX_CALL_MINUTES
    pool = session.scalar(select(book.POOL_AVAILABLE).where(book.accounts.c.id == account.id))
    limit = account.overdraft_limit if account.overdraft_policy == "overdraft" else 0
    return max(pool + limit, 0) // rate if account.status == "active" else 0


def _voicemail_or_hang_up(number: PhoneNumber, call: Call, base_url: str) -> str:
    if not number.voicemail:
        return twiml.hang_up()
    callback = f"{base_url}{RECORDING_PATH}?call={call.id}"
    return twiml.voicemail(transcribe=number.transcribe, recording_callback=callback,
                           transcription_callback=callback)


def _verified(session: Session, account_id: str, signed: SignedForm, deployment: Credentials) -> Account:
    account = session.get(Account, account_id)
    credentials = credentials_of(signed.account_sid, own_sid=account.twilio_account_sid,
                                 own_token=account.twilio_auth_token, deployment=deployment)
    if not signed.signed_by(credentials):
        raise CallbackRejected("The callback does not come from the Twilio account of this number.")
    return account


def _call(session: Session, call_id: str, signed: SignedForm, deployment: Credentials) -> Call:
    call = session.get(Call, call_id, with_for_update=True)
    if call is None or call.direction != "inbound":
        raise CallbackRejected("No such inbound call.")
    _verified(session, call.account_id, signed, deployment)
    if signed.account_sid != call.twilio_account_sid or str(signed.params.get("CallSid", "")) != call.twilio_sid:
        raise CallbackRejected("The callback is not about this call.")
    return call


def _charge(session: Session, call: Call, amount: int, key: str, now: datetime) -> None:
    """Charge one part of the call once under `key` (the call's row is locked: a repeat finds the entry), and add
    it to what the call has cost, whatever order its parts came in."""
    if amount <= 0 or session.scalar(select(Entry.id).where(Entry.idempotency_key == key)) is not None:
        return
    book.charge_pool(session, call.account_id, amount, kind="usage", reference=call.id, idempotency_key=key, now=now)
    call.credits_charged, call.updated_at = (call.credits_charged or 0) + amount, now


def _seconds(raw) -> int:
    try:
        return max(int(str(raw)), 0)
    except (TypeError, ValueError):
        return 0
