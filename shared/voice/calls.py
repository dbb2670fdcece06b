"""Accepting an outgoing call (POST /v1/calls), and reading and listing an account's calls.

Accepting validates, prices the call at `max_minutes` and checks the account could hold one minute of it, then
stores it `accepted`: the place step holds what the account can pay for, up to `max_minutes`.
"""

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select, tuple_
from sqlalchemy.orm import Session

from shared.errors import InsufficientCredits, NotFound, OptedOut, ValidationFailed
from shared.ids import new_id
from shared.ledger import book
from shared.ledger.expiry import utc
from shared.messaging.opt_outs import is_opted_out
from shared.messaging.phone_numbers import parse_e164
from shared.messaging.rates import RateCard
from shared.models import Account, Call, PhoneNumber
from shared.money import credits_phrase, format_credits
from shared.voice.pricing import CallPrice, call_price

MAX_CALL_MINUTES = 240  # Twilio's own limit on a call is four hours
MAX_SAY_CHARACTERS = 4096
STATUSES = ("accepted", "queued", "initiated", "ringing", "in-progress", "completed", "busy", "no-answer", "failed",
            "canceled", "parked", "skipped")
FINAL_STATUSES = frozenset({"completed", "busy", "no-answer", "failed", "canceled", "skipped"})
MINUTES_ENTRY_SUFFIXES = (":charge", ":forwarded")  # the ledger keys of a call's minutes (not its voicemail's)


@dataclass(frozen=True)
class CallRequest:
    to: object
    from_: object
    say: object = None
    play_url: object = None
    connect_to: object = None
    max_minutes: object = None
    machine_detection: object = False
    user_id: object = None


def accept_call(session: Session, account_id: str, request: CallRequest, *, rate_card: RateCard,
                now: datetime) -> tuple[Call, CallPrice]:
    """Store a valid call `accepted` (the caller enqueues its place job); raises ValidationFailed, OptedOut,
    InsufficientCredits, AccountLocked or NotFound."""
    account = session.get(Account, account_id)
    if account is None:
        raise NotFound(f"No account {account_id}.")
    errors: dict[str, str] = {}
    to = _number("to", request.to, errors)
    from_ = _number("from", request.from_, errors)
    connect_to = _number("connect_to", request.connect_to, errors) if request.connect_to is not None else None
    say, play_url = check_content(request.say, request.play_url, connect_to, errors)
    max_minutes = check_minutes("max_minutes", request.max_minutes, account.call_max_minutes, errors)
    if not isinstance(request.machine_detection, bool):
        errors["machine_detection"] = "must be true or false"
    if from_ is not None and not holds_number(session, account_id, from_):
        errors["from"] = "is not a number of this account (POST /v1/accounts/{id}/numbers)"
    if errors:
        raise ValidationFailed("Invalid call: " + "; ".join(f"{f} {r}" for f, r in errors.items()), errors=errors)
    if is_opted_out(session, account_id, to):
        raise OptedOut(f"{to} has opted out of this account or is on its do-not-contact list.")
    legs = 2 if connect_to else 1
    price = call_price(rate_card, to, item="call_outgoing", legs=legs, machine_detection=request.machine_detection)
    pre_check(session, account_id, price, user_id=request.user_id, now=now)
    call = Call(id=new_id("call"), account_id=account_id, user_id=request.user_id, direction="outbound", to=to,
                from_=from_, say=say, play_url=play_url, connect_to=connect_to,
                machine_detection=request.machine_detection, max_minutes=max_minutes, legs=legs,
                rate=price.per_minute // legs, status="accepted", credits_estimated=price.cost(max_minutes),
                created_at=now, updated_at=now)
    session.add(call)
    session.flush()
    return call, price


def pre_check(session: Session, account_id: str, price: CallPrice, *, user_id, now: datetime) -> None:
    """Refuse early what the place step would: a locked account (AccountLocked), or one that cannot hold a minute."""
    available = book.available_for(session, account_id, user_id if isinstance(user_id, str) else None, now=now)
    required = price.cost(1)
    if available is not None and available < required:
        spendable = max(available, 0)
        raise InsufficientCredits(f"A minute of this call needs {credits_phrase(required)}; "
                                  f"{format_credits(spendable)} available.", available=spendable, required=required)


def check_content(say: object, play_url: object, connect_to: str | None,
                  errors: dict[str, str]) -> tuple[str | None, str | None]:
    """Exactly one of say, play_url (and connect_to, for a call)."""
    given = [name for name, value in (("say", say), ("play_url", play_url), ("connect_to", connect_to))
             if value is not None]
    if len(given) != 1:
        errors["say"] = "give exactly one of say, play_url" + (" or connect_to" if connect_to or not given else "")
        return None, None
    if say is not None and (not isinstance(say, str) or not say.strip() or len(say) > MAX_SAY_CHARACTERS):
        errors["say"] = f"must be text of 1 to {MAX_SAY_CHARACTERS} characters"
    if play_url is not None and (not isinstance(play_url, str) or not play_url.startswith(("https://", "http://"))
                                 or len(play_url) > 500):
        errors["play_url"] = "must be an http(s) URL of a recording"
    return (say if isinstance(say, str) else None), (play_url if isinstance(play_url, str) else None)


def check_minutes(field: str, raw: object, default: int, errors: dict[str, str]) -> int:
    if raw is None:
        return default
    if isinstance(raw, bool) or not isinstance(raw, int) or not 1 <= raw <= MAX_CALL_MINUTES:
        errors[field] = f"must be a whole number of minutes from 1 to {MAX_CALL_MINUTES}"
        return default
    return raw


def _number(field: str, raw: object, errors: dict[str, str]) -> str | None:
    try:
        return parse_e164(raw, field=field)
    except ValidationFailed as error:
        errors.update(error.errors)
        return None


def holds_number(session: Session, account_id: str, phone: str) -> bool:
    """Whether `phone` is a number the account holds now (not released)."""
    return session.scalar(select(PhoneNumber.id).where(PhoneNumber.account_id == account_id,
                                                       PhoneNumber.phone == phone,
                                                       PhoneNumber.released_at.is_(None))) is not None


def get_call(session: Session, call_id: str, *, account_id: str | None, user_id: str | None = None) -> Call:
    """The call, if `account_id` (None: the operator) may see it, and, with `user_id`, if that user placed it."""
    call = session.get(Call, call_id)
    if (call is None or (account_id is not None and call.account_id != account_id)
            or (user_id is not None and call.user_id != user_id)):
        raise NotFound(f"No call {call_id}.")
    return call


def find_calls(session: Session, account_id: str, *, limit: int, before_id: str | None = None,
               status: str | None = None, direction: str | None = None, broadcast_id: str | None = None,
               user_id: str | None = None) -> list[Call]:
    """The account's calls, newest first; `before_id`: those after that one."""
    query = select(Call).where(Call.account_id == account_id)
    for column, value in ((Call.status, status), (Call.direction, direction), (Call.broadcast_id, broadcast_id),
                          (Call.user_id, user_id)):
        if value is not None:
            query = query.where(column == value)
    if before_id is not None:
        last = session.get(Call, before_id)
        if last is not None:
            query = query.where(tuple_(Call.created_at, Call.id) < tuple_(last.created_at, last.id))
    return list(session.scalars(query.order_by(Call.created_at.desc(), Call.id.desc()).limit(limit)))


def call_minutes(session: Session, call_ids: list[str]) -> dict[str, int | None]:
    """The minutes billed of each of these calls (for their ledger entries)."""
    if not call_ids:
        return {}
    return dict(session.execute(select(Call.id, Call.minutes_billed).where(Call.id.in_(set(call_ids)))).all())


def call_view(call: Call) -> dict:
    """The API's shape of a call: credits as decimal strings, times ISO-8601."""
    return {
        "id": call.id, "direction": call.direction, "status": call.status, "to": call.to, "from": call.from_,
        "connect_to": call.connect_to, "broadcast_id": call.broadcast_id, "user_id": call.user_id,
        "machine_detection": call.machine_detection, "max_minutes": call.max_minutes,
        "minutes_held": call.minutes_held, "time_limit": call.time_limit, "legs": call.legs,
        "duration_seconds": call.duration_seconds, "minutes_billed": call.minutes_billed,
        "answered_by": call.answered_by, "credits_estimated": format_credits(call.credits_estimated),
        "credits_charged": None if call.credits_charged is None else format_credits(call.credits_charged),
        "voicemail": ({"recording_url": call.recording_url, "transcription": call.transcription}
                      if call.recording_url or call.transcription else None),
        "skip_reason": call.skip_reason, "error_message": call.error_message, "twilio_sid": call.twilio_sid,
        "created_at": utc(call.created_at).isoformat(), "updated_at": utc(call.updated_at).isoformat(),
    }
