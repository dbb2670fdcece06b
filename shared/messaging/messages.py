"""Accepting a message: everything intake checks before it promises (202) to send it, in one unit of work.

The message row is written before the answer, so nothing accepted is ever lost: if the enqueue
that follows fails, the sweeper finds the `accepted` row and enqueues it.
"""

import functools
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import Row, Select, String, bindparam, cast, insert, literal, select, union_all
from sqlalchemy.orm import Session

from shared.db import run
from shared.errors import DomainError, InsufficientCredits, NotFound, OptedOut, ValidationFailed
from shared.ids import new_id
from shared.ledger import book
from shared.messaging.estimate import Estimate, estimate_message
from shared.messaging.parking import blocked_reason
from shared.messaging.phone_numbers import parse_e164, parse_sender
from shared.messaging.rates import RateCard
from shared.messaging.send_cap import DailySends, SendCap
from shared.messaging.shared_short_code import prefixed
from shared.models import Account, Message, OptOut, PhoneNumber, User
from shared.money import MILLICREDITS_PER_CREDIT, credits_phrase, format_credits

# The statuses a message can sit in before the send step claims it.
WAITING_STATUSES = ("accepted", "scheduled", "queued", "parked")
FINAL_STATUSES = ("delivered", "undelivered", "failed", "canceled")
MAX_SCHEDULE_AHEAD = timedelta(days=366)
MAX_SCHEDULE_PAST = timedelta(days=1)  # a send_at this far back is refused, not sent at once
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
                   now: datetime, cap: SendCap, shared_short_code: str | None = None) -> tuple[Message, Estimate]:
    """Validate, price and pre-check a message, then insert it `accepted` (or `scheduled`); raises its DomainError."""
    outcome = accept_messages(session, [(account_id, request)], rate_card=rate_card, now=now, cap=cap,
                              shared_short_code=shared_short_code)[0]
    if isinstance(outcome, DomainError):
        raise outcome
    return outcome


def accept_messages(session: Session, requests: list[tuple[str, MessageRequest]], *, rate_card: RateCard,
                    now: datetime, cap: SendCap,
                    shared_short_code: str | None = None) -> list[tuple[Message, Estimate] | DomainError]:
    """`accept_message` for many (account_id, request) at once: one read of the facts, one INSERT.

    Each message gets its own outcome, in order: a bad one is its DomainError and does not stop
    the others. The credit check is a quick one without a hold; the worker's hold is authoritative.
    Last comes the daily cap of new accounts (shared.messaging.send_cap). `from` may be the
    deployment's `shared_short_code` for an account with a keyword on it: the body then carries the
    keyword in front, and is priced, held and sent so.
    """
    numbers = []
    for _, request in requests:
        errors: dict[str, str] = {}
        from_ = (request.from_ if shared_short_code is not None and request.from_ == shared_short_code
                 else _parse_number("from", request.from_, errors, parse=parse_sender))
        numbers.append((_parse_number("to", request.to, errors), from_, errors))
    facts = _facts(session, [(account_id, to, from_, request.user_id)
                             for (account_id, request), (to, from_, _) in zip(requests, numbers)])
    outcomes: list[tuple[Message, Estimate] | DomainError] = []
    daily_sends = DailySends(session, cap, now)
    for (account_id, request), (to, from_, errors), row in zip(requests, numbers, facts):
        try:
            outcomes.append(_accept_one(session, account_id, request, to, from_, errors, row, rate_card, now, daily_sends))
        except DomainError as error:
            outcomes.append(error)
    accepted = [outcome[0] for outcome in outcomes if not isinstance(outcome, DomainError)]
    if accepted:  # one round trip for all the rows; Core skips the ORM's bookkeeping per object
        session.connection().execute(insert(Message.__table__), [
            {column: getattr(message, attribute) for attribute, column in _INSERTED.items()} for message in accepted])
    return outcomes


def _accept_one(session: Session, account_id: str, request: MessageRequest, to: str | None, from_: str | None,
                errors: dict[str, str], facts: Row | None, rate_card: RateCard, now: datetime,
                daily_sends: DailySends) -> tuple[Message, Estimate]:
    if facts is None:
        raise NotFound(f"No account {account_id}.")
    if facts.status == "canceled":  # its numbers went with it: the refusal names the account, not the sender
        book.holdable(session, account_id, facts, user_id=request.user_id, now=now)
    to, from_, sender_type, user_id, send_at = _check_fields(request, to, from_, facts, errors, now)
    body = prefixed(facts.keyword if from_ == facts.keyword_code else None, request.body)
    try:
        estimate = estimate_message(body, to=[to], sender_type=sender_type, media_urls=request.media_urls,
                                    rate_card=rate_card)
    except ValidationFailed as error:
        errors = {("to" if field == "to[0]" else field): reason for field, reason in error.errors.items()}
        raise ValidationFailed("Invalid message: " + "; ".join(f"{f} {r}" for f, r in errors.items()),
                               errors=errors) from None
    if facts.opted_out:
        raise OptedOut(f"{to} has opted out of messages from this account or is on its do-not-contact list.")
    _pre_check(session, account_id, facts, estimate.credits_total, user_id=user_id, now=now)
    daily_sends.take(account_id, created_at=facts.account_created_at, timezone=facts.timezone)
    reason = blocked_reason(facts)
    message = Message(  # the answer; accept_messages inserts its _INSERTED attributes
        id=new_id("msg"), account_id=account_id, user_id=user_id, to=to, from_=from_, body=body,
        media_urls=request.media_urls or None,
        status="parked" if reason else ("scheduled" if send_at else "accepted"),
        error_message=reason, segments=estimate.segments, encoding=estimate.encoding,
        credits_estimated=estimate.credits_total, send_at=send_at, created_at=now, updated_at=now,
    )
    return message, estimate


_INSERTED = {attribute: Message.__mapper__.attrs[attribute].columns[0].key for attribute in (
    "id", "account_id", "user_id", "to", "from_", "body", "media_urls", "status", "error_message", "segments",
    "encoding", "credits_estimated", "send_at", "created_at", "updated_at")}  # attribute -> column


def _parse_number(field: str, raw: object, errors: dict[str, str], parse=parse_e164) -> str | None:
    try:
        return parse(raw, field=field)
    except ValidationFailed as error:
        errors.update(error.errors)
        return None


def _facts(session: Session, wanted: list[tuple[str, str | None, str | None, object]]) -> list[Row | None]:
    """What intake reads for each (account_id, to, from, user_id), in one query for them all: why the account
    may not send (the columns `blocked_reason` reads), the sender's type, the opt-out, the user's role,
    what the account or user could hold, the account's age and time zone (for the new accounts' cap), and
    its keyword on the shared short code with the code it is on.

    None for a message whose account does not exist.
    """
    size = 1 << (len(wanted) - 1).bit_length()  # padded to a power of two: a few statements serve every batch
    padded = wanted + [(None, None, None, None)] * (size - len(wanted))  # no account: a row that joins nothing
    parameters = {}
    for i, (account_id, to, from_, user_id) in enumerate(padded):
        parameters.update({f"account_id_{i}": account_id, f"to_{i}": to, f"from__{i}": from_,
                           f"user_id_{i}": user_id if isinstance(user_id, str) else None})
    rows = run(session.connection(), _facts_query(size), parameters).all()
    found = {row.i: row for row in rows}
    return [found.get(i) for i in range(len(wanted))]


_ASKED = (("account_id", String()), ("to", String()), ("from_", String()), ("user_id", String()))


@functools.lru_cache(maxsize=16)
def _facts_query(count: int) -> Select:
    """The statement for `count` messages, built once: SQLAlchemy then reuses its compiled form, and with
    one statement per power of two, psycopg's cache of parsed statements is not flooded by batch sizes."""
    asked = [select(literal(i).label("i"),
                    *(cast(bindparam(f"{name}_{i}"), type_).label(name) for name, type_ in _ASKED))
             for i in range(count)]
    ask = (union_all(*asked) if count > 1 else asked[0]).subquery("ask")
    return (
        select(ask.c.i, Account.sending_blocked_reason, Account.status, Account.status_reason,
               Account.overdraft_policy, Account.overdraft_limit, Account.next_expiry_at, book.POOL_AVAILABLE.label("pool"),
               Account.created_at.label("account_created_at"), Account.timezone,
               Account.shared_short_code.label("keyword_code"), Account.shared_short_code_keyword.label("keyword"),
               select(PhoneNumber.type).where(PhoneNumber.account_id == ask.c.account_id,
                                               PhoneNumber.phone == ask.c.from_, PhoneNumber.released_at.is_(None))
               .scalar_subquery().label("sender_type"),
               select(OptOut.id).where(OptOut.account_id == ask.c.account_id, OptOut.phone == ask.c.to)
               .exists().label("opted_out"),
               select(User.role).where(User.id == ask.c.user_id, User.account_id == ask.c.account_id,
                                       User.deleted_at.is_(None)).scalar_subquery().label("role"),
               select(User.balance - User.held).where(User.id == ask.c.user_id).scalar_subquery().label("own"),
               select(User.balance).where(User.id == ask.c.user_id).scalar_subquery().label("own_balance"))
        .select_from(ask.join(Account, Account.id == ask.c.account_id))
    )


def _check_fields(request: MessageRequest, to: str | None, from_: str | None, facts: Row, errors: dict[str, str],
                  now: datetime) -> tuple[str, str, str, str | None, datetime | None]:
    """Every field problem at once (`errors` holds those of the numbers), as one ValidationFailed naming each field."""
    sender_type = "long_code"
    if from_ is not None:
        if facts.sender_type is None and facts.keyword is not None and from_ == facts.keyword_code:
            sender_type = "short_code"  # the shared short code, under the account's keyword
        elif facts.sender_type is None:
            errors["from"] = "is not a sender number of this account (POST /v1/accounts/{id}/numbers)"
        else:
            sender_type = facts.sender_type
    user_id = request.user_id
    if user_id is not None and facts.role is None:  # no such user, another account's, or deleted
        errors["user_id"] = "is not a user of this account"
    send_at = parse_send_at(request.send_at, now, errors)
    if errors:
        raise ValidationFailed("Invalid message: " + "; ".join(f"{f} {r}" for f, r in errors.items()), errors=errors)
    return to, from_, sender_type, user_id, send_at


def parse_send_at(raw: object, now: datetime, errors: dict[str, str]) -> datetime | None:
    """A send's `send_at` (a message's, a campaign's): None for now, a time within the last day meaning now too (a
    retry, a clock behind). One further back is refused rather than sent at once: it is a wrong year or month far
    more often than a wish to send now. So is one more than a year ahead. Problems go to `errors`."""
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
    if now - send_at > MAX_SCHEDULE_PAST:
        errors["send_at"] = "is more than a day past: leave it out to send now"
        return None
    return send_at.astimezone(UTC) if send_at > now else None


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


def _pre_check(session: Session, account_id: str, facts: Row, required: int, *, user_id: str | None,
               now: datetime) -> None:
    """Refuse early what the hold would refuse later: a locked account, or one (or a user) that cannot pay."""
    available = book.holdable(session, account_id, facts, user_id=user_id, now=now)
    if available is None:
        return
    if available < required:
        spendable = max(available, 0)
        raise InsufficientCredits(
            f"This message needs {credits_phrase(required)}; {format_credits(spendable)} "
            f"{'is' if spendable == MILLICREDITS_PER_CREDIT else 'are'} available.",
            available=spendable, required=required,
        )


def get_message(session: Session, message_id: str, *, account_id: str | None, user_id: str | None = None) -> Message:
    """The message, if `account_id` (None: the operator) may see it, and, with `user_id`, if that user sent it."""
    message = session.get(Message, message_id)
    if (message is None or (account_id is not None and message.account_id != account_id)
            or (user_id is not None and message.user_id != user_id)):
        raise NotFound(f"No message {message_id}.")
    return message


def message_view(message: Message, *, reprocessed_as: str | None = None) -> dict:
    """The API's shape of a message: credits as decimal strings, times ISO-8601; `reprocessed_as` is the id of its
    toll-free resend (shared.messaging.reprocessing.resend_of)."""
    return {
        "id": message.id,
        "direction": message.direction,
        "status": message.status,
        "to": message.to,
        "from": message.from_,
        "body": message.body,
        "media_urls": message.media_urls or [],
        "user_id": message.user_id,
        "campaign_id": message.campaign_id,
        "segments": message.twilio_segments or message.segments,
        "encoding": message.encoding,
        "credits_estimated": format_credits(message.credits_estimated),
        "credits_charged": None if message.credits_charged is None else format_credits(message.credits_charged),
        "rate_card_version": message.rate_card_version,
        "twilio_sid": message.twilio_sid,
        "twilio_price": message.twilio_price,
        "error_code": message.error_code,
        "error_message": message.error_message,
        "reprocessed_as": reprocessed_as,
        "reprocessed_from": message.reprocessed_from,
        "send_at": _iso(message.send_at),
        "created_at": _iso(message.created_at),
        "updated_at": _iso(message.updated_at),
    }


def rate_card_versions(session: Session, message_ids: list[str]) -> dict[str, int | None]:
    """The rate card version each of these messages was settled with (for their ledger entries); ids that are not
    messages' are left out."""
    if not message_ids:
        return {}
    return dict(session.execute(select(Message.id, Message.rate_card_version)
                                .where(Message.id.in_(set(message_ids)))).all())


def in_campaigns(session: Session, message_ids: list[str]) -> dict[str, str]:
    """Those of these messages that are a campaign's, each with its account (read a thousand ids to a statement)."""
    found: dict[str, str] = {}
    for start in range(0, len(message_ids), 1000):
        found.update(session.execute(select(Message.id, Message.account_id).where(
            Message.id.in_(message_ids[start:start + 1000]), Message.campaign_id.is_not(None))).tuples().all())
    return found


def _iso(value: datetime | None) -> str | None:
    """SQLite hands back naive datetimes; every time creditq stores is UTC."""
    if value is None:
        return None
    return (value if value.tzinfo else value.replace(tzinfo=UTC)).isoformat()
