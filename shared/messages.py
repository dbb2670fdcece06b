"""Accepting a message: everything intake checks before it promises (202) to send it, in one unit of work.

The message row is written before the answer, so nothing accepted is ever lost: if the enqueue
that follows fails, the sweeper finds the `accepted` row and enqueues it.
"""

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import Row, literal, select
from sqlalchemy.orm import Session

from . import ledger
from .errors import InsufficientCredits, NotFound, OptedOut, ValidationFailed
from .estimate import Estimate, estimate_message
from .ids import new_id
from .models import Account, Message, OptOut, PhoneNumber, User
from .money import format_credits
from .parking import blocked_reason
from .phone_numbers import parse_e164
from .rates import RateCard

# The statuses a message can sit in before the send step claims it.
WAITING_STATUSES = ("accepted", "scheduled", "queued", "parked")
FINAL_STATUSES = ("delivered", "undelivered", "failed", "canceled")
MAX_SCHEDULE_AHEAD = timedelta(days=366)
# RedisBroker takes delays under 7 days; a message scheduled further ahead waits for the sweeper.
MAX_SEND_DELAY = timedelta(days=7) - timedelta(minutes=1)


@dataclass(frozen=True)
class MessageRequest:
    """A POST /v1/messages body, still unchecked."""

    to: object
    from_: object
    body: object
    media_urls: object = None
    user_id: object = None
    send_at: object = None


def accept_message(session: Session, account_id: str, request: MessageRequest, *, rate_card: RateCard,
                   now: datetime) -> tuple[Message, Estimate]:
    """Validate, price and pre-check a message, then insert it `accepted` (or `scheduled`).

    The credit check here is a quick one without a hold; the worker's hold is authoritative.
    """
    errors: dict[str, str] = {}
    to, from_ = _parse_number("to", request.to, errors), _parse_number("from", request.from_, errors)
    facts = _facts(session, account_id, to, from_)
    if facts is None:
        raise NotFound(f"No account {account_id}.")
    to, from_, sender_type, user_id, send_at = _check_fields(session, account_id, request, to, from_,
                                                             facts.sender_type, errors, now)
    try:
        estimate = estimate_message(request.body, to=[to], sender_type=sender_type, media_urls=request.media_urls,
                                    rate_card=rate_card)
    except ValidationFailed as error:
        errors = {("to" if field == "to[0]" else field): reason for field, reason in error.errors.items()}
        raise ValidationFailed(str(error).replace("to[0]", "to"), errors=errors) from None
    if facts.opted_out:
        raise OptedOut(f"{to} has opted out of messages from this account or is on its do-not-contact list.")
    _pre_check(session, account_id, user_id, estimate.credits_total)
    reason = blocked_reason(facts)
    message = Message(
        id=new_id("msg"), account_id=account_id, user_id=user_id, to=to, from_=from_, body=request.body,
        media_urls=request.media_urls or None,
        status="parked" if reason else ("scheduled" if send_at else "accepted"),
        error_message=reason, segments=estimate.segments, encoding=estimate.encoding,
        credits_estimated=estimate.credits_total, send_at=send_at, created_at=now, updated_at=now,
    )
    session.add(message)
    return message, estimate


def _parse_number(field: str, raw: object, errors: dict[str, str]) -> str | None:
    try:
        return parse_e164(raw, field=field)
    except ValidationFailed as error:
        errors.update(error.errors)
        return None


def _facts(session: Session, account_id: str, to: str | None, from_: str | None) -> Row | None:
    """What intake reads about the account in one query: why it may not send, the sender's type, the opt-out.

    None when there is no such account. The columns are those `blocked_reason` reads.
    """
    sender_type = (select(PhoneNumber.type).where(PhoneNumber.account_id == account_id, PhoneNumber.phone == from_)
                   .scalar_subquery() if from_ is not None else literal(None))
    opted_out = (select(OptOut.id).where(OptOut.account_id == account_id, OptOut.phone == to).exists()
                 if to is not None else literal(False))
    return session.execute(
        select(Account.sending_blocked_reason, Account.status, Account.status_reason,
               sender_type.label("sender_type"), opted_out.label("opted_out"))
        .where(Account.id == account_id)
    ).first()


def _check_fields(session: Session, account_id: str, request: MessageRequest, to: str | None, from_: str | None,
                  number_type: str | None, errors: dict[str, str],
                  now: datetime) -> tuple[str, str, str, str | None, datetime | None]:
    """Every field problem at once (`errors` holds those of the numbers), as one ValidationFailed naming each field."""
    sender_type = "long_code"
    if from_ is not None:
        if number_type is None:
            errors["from"] = "is not a sender number of this account (POST /v1/accounts/{id}/numbers)"
        else:
            sender_type = number_type
    user_id = request.user_id
    if user_id is not None:
        user = session.get(User, user_id) if isinstance(user_id, str) else None
        if user is None or user.account_id != account_id or user.deleted_at is not None:
            errors["user_id"] = "is not a user of this account"
    send_at = _parse_send_at(request.send_at, now, errors)
    if errors:
        raise ValidationFailed("Invalid message: " + "; ".join(f"{f} {r}" for f, r in errors.items()), errors=errors)
    return to, from_, sender_type, user_id, send_at


def _parse_send_at(raw: object, now: datetime, errors: dict[str, str]) -> datetime | None:
    """None for 'now'; a time already past also means now."""
    if raw is None:
        return None
    try:
        send_at = datetime.fromisoformat(raw) if isinstance(raw, str) else None
    except ValueError:
        send_at = None
    if send_at is None or send_at.tzinfo is None:
        errors["send_at"] = "must be an ISO-8601 time with an offset, such as 2026-11-02T09:00:00-05:00"
        return None
    if send_at - now > MAX_SCHEDULE_AHEAD:
        errors["send_at"] = "is more than a year ahead"
        return None
    return send_at if send_at > now else None


def send_delay_ms(send_at: datetime | None, now: datetime) -> int | None:
    """How long to delay the job that releases a scheduled message, so it goes out on time.

    None when it is too far ahead for the broker: the sweeper releases it when its time comes.
    """
    if send_at is None:
        return 0
    ahead = (send_at if send_at.tzinfo else send_at.replace(tzinfo=UTC)) - now  # naive: SQLite's UTC
    if ahead > MAX_SEND_DELAY:
        return None
    return max(int(ahead.total_seconds() * 1000), 0)


def _pre_check(session: Session, account_id: str, user_id: str | None, required: int) -> None:
    """Refuse early what the hold would refuse later (a locked account raises AccountLocked here)."""
    available = ledger.available_for(session, account_id, user_id)
    if available is not None and available < required:
        raise InsufficientCredits(
            f"This message needs {format_credits(required)} credits;"
            f" {format_credits(max(available, 0))} are available.",
            available=max(available, 0), required=required,
        )


def get_message(session: Session, message_id: str, *, account_id: str | None) -> Message:
    """The message, if `account_id` (None: the operator) may see it."""
    message = session.get(Message, message_id)
    if message is None or (account_id is not None and message.account_id != account_id):
        raise NotFound(f"No message {message_id}.")
    return message


def message_view(message: Message) -> dict:
    """The API's shape of a message: credits as decimal strings, times ISO-8601."""
    return {
        "id": message.id,
        "status": message.status,
        "to": message.to,
        "from": message.from_,
        "body": message.body,
        "media_urls": message.media_urls or [],
        "user_id": message.user_id,
        "segments": message.twilio_segments or message.segments,
        "encoding": message.encoding,
        "credits_estimated": format_credits(message.credits_estimated),
        "credits_charged": None if message.credits_charged is None else format_credits(message.credits_charged),
        "twilio_sid": message.twilio_sid,
        "twilio_price": message.twilio_price,
        "error_code": message.error_code,
        "error_message": message.error_message,
        "send_at": _iso(message.send_at),
        "created_at": _iso(message.created_at),
        "updated_at": _iso(message.updated_at),
    }


def _iso(value: datetime | None) -> str | None:
    """SQLite hands back naive datetimes; every time creditq stores is UTC."""
    if value is None:
        return None
    return (value if value.tzinfo else value.replace(tzinfo=UTC)).isoformat()
