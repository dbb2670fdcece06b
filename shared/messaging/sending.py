"""The send step: hold the credits, mark the message `sending`, ask Twilio once, store the sid (and the Twilio
account that owns the message, whose token alone may sign its callbacks).

Each database step is its own unit of work keyed by the message id, so a replayed job changes
nothing. The one step that cannot be undone, Twilio's create, happens only after the message is
`sending` in the database; a `sending` message without a sid is never sent again: it waits for
its status callback or for the sweeper's reconciliation with Twilio.
"""

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from shared.db import Database
from shared.errors import AccountLocked, InsufficientCredits
from shared.events.outbox import message_event
from shared.ledger import book
from shared.ledger.expiry import utc
from shared.messaging.estimate import sender_type_of
from shared.messaging.opt_outs import FROM_TWILIO_21610, opt_out
from shared.messaging.parking import blocked_reason, park_account
from shared.messaging.send_policy import gate_message
from shared.messaging.statuses import OUR_STATUS_FOR_TWILIO, apply_early_statuses
from shared.models import Account, Hold, Message, OptOut
from shared.twilio.errors import CredentialsRejected, OutcomeUnknown, PermanentTwilioError, TransientTwilioError

# A throttle wait this short is slept off in the worker; a longer one re-enqueues the job.
MAX_THROTTLE_SLEEP_SECONDS = 1.0
SENDER_TYPE_TTL_SECONDS = 60.0
_SENDER_TYPES: dict[tuple[str, str], tuple[str, float]] = {}  # (account, phone) -> (type, expiry)


@dataclass(frozen=True)
class _SlotBooked:
    """The throttle booked this send a slot too far ahead to sleep off; the message row records it."""

    seconds: float
    sender: str


class SendLater(Exception):
    """The job should run again after `delay_seconds` (None: back off).

    `slot_booked` means the sender throttle already booked this send's slot at that delay: the next
    run must not book another.
    """

    def __init__(self, reason: str, delay_seconds: float | None, *, slot_booked: bool = False):
        super().__init__(reason)
        self.delay_seconds = delay_seconds
        self.slot_booked = slot_booked


@dataclass(frozen=True)
class Claim:
    """What the Twilio call needs, read inside the claiming transaction."""

    account_id: str
    to: str
    from_: str
    body: str
    media_urls: list[str] | None
    twilio_account_sid: str | None
    twilio_auth_token: str | None


def utcnow() -> datetime:
    return datetime.now(UTC)


def send_message(database: Database, message_id: str, *, gateway_for: Callable[[str | None, str | None], object],
                 throttle, hold_ttl_seconds: int, slot_booked: bool = False,
                 now: Callable[[], datetime] = utcnow) -> str:
    """Send one message; returns the status it is left in. Raises SendLater when it must run again.

    `gateway_for(account_sid, auth_token)` gives the gateway for the account's own Twilio
    credentials (None, None: the deployment's).
    """
    with database.unit_of_work() as session:
        claim = _claim(session, message_id, None if slot_booked else throttle, hold_ttl_seconds, now)
    if isinstance(claim, _SlotBooked):  # committed first, so the sweeper knows this message's job is delayed
        raise SendLater(f"sender {claim.sender} is at its throughput limit", claim.seconds, slot_booked=True)
    if isinstance(claim, str):
        return claim
    gateway = gateway_for(claim.twilio_account_sid, claim.twilio_auth_token)
    try:
        sent = gateway.send(to=claim.to, from_=claim.from_, body=claim.body, media_urls=claim.media_urls)
    except OutcomeUnknown:
        return "sending"  # Twilio may have it: the callback or the sweeper's reconciliation decides
    except TransientTwilioError as error:
        with database.unit_of_work() as session:
            _release(session, message_id, now())
        raise SendLater(f"Twilio is unavailable: {error}", error.retry_after) from error
    except CredentialsRejected as error:
        with database.unit_of_work() as session:
            _block_account(session, message_id, str(error), now())
        return "parked"
    except PermanentTwilioError as error:
        with database.unit_of_work() as session:
            _fail(session, message_id, error, now())
        return "failed"
    with database.unit_of_work() as session:
        return _store_sid(session, message_id, sent, now())


def _sender_type(session: Session, phone: str, account_id: str) -> str:
    """The sender number's type (it sets the throttle rate), remembered for a minute: it practically never changes."""
    key = (account_id, phone)
    cached = _SENDER_TYPES.get(key)
    if cached is not None and cached[1] > time.monotonic():
        return cached[0]
    sender_type = sender_type_of(session, phone, account_id=account_id)
    _SENDER_TYPES[key] = (sender_type, time.monotonic() + SENDER_TYPE_TTL_SECONDS)
    return sender_type


def _sendable(message: Message) -> bool:
    """Only `accepted` messages are sent; the sweeper makes scheduled ones `accepted` when their time comes."""
    return message.status == "accepted" and message.twilio_sid is None


def _claim(session: Session, message_id: str, throttle, hold_ttl_seconds: int,
           clock: Callable[[], datetime]) -> Claim | _SlotBooked | str:
    """Book the sender's throughput (unless `throttle` is None: already booked), hold the estimate and mark the
    message `sending`: one transaction. Else the status it stays in (or is parked in).

    The booked slot is recorded on the message (`slot_at`). When it is too far ahead to sleep off, nothing
    else changes: the job runs again then, and the sweeper leaves the message alone until that slot has
    passed. A spare job (a redelivery, a second enqueue) that finds the slot still ahead waits for it too
    instead of booking another, so a message holds at most one future slot of its sender.
    """
    opted_out = (select(OptOut.id).where(OptOut.account_id == Message.account_id, OptOut.phone == Message.to)
                 .exists().label("opted_out"))  # read with the row: no round trip of its own
    row = session.execute(select(Message, Account, opted_out).join(Account, Account.id == Message.account_id)
                          .where(Message.id == message_id).with_for_update(of=Message)).first()
    if row is None or not _sendable(row.Message):
        return "skipped"
    message, account, recipient_opted_out = row
    now = clock()
    if account.status == "canceled":
        return _cancel(session, message, account, now)
    reason = blocked_reason(account)
    if reason:
        return _park(message, reason, now)
    if waiting := gate_message(session, message, account, recipient_opted_out=recipient_opted_out, now=now):
        return waiting
    if throttle is not None:
        if message.slot_at is not None and utc(message.slot_at) > now:  # booked by another job: no second slot
            return _SlotBooked((utc(message.slot_at) - now).total_seconds(), message.from_)
        wait = throttle.reserve(message.from_, _sender_type(session, message.from_, account.id), message.segments)
        message.slot_at = now + timedelta(seconds=wait)
        if wait > MAX_THROTTLE_SLEEP_SECONDS:
            return _SlotBooked(wait, message.from_)
        if wait > 0:
            time.sleep(wait)  # only the message row is locked meanwhile; the account row is not yet
            now = clock()
    hold = _reserved_hold(session, message)
    try:
        hold = hold or book.reserve(session, message.account_id, message.credits_estimated, user_id=message.user_id,
                                      reference=message.id,
                                      idempotency_key=f"message:{message.id}:hold:{message.attempts}",
                                      ttl_seconds=hold_ttl_seconds, now=now)
    except (InsufficientCredits, AccountLocked) as error:
        session.refresh(account)  # canceled while this step waited for the account's lock?
        if account.status == "canceled":
            return _cancel(session, message, account, now)
        return _park(message, str(error), now)
    message.status = "sending"
    message.hold_id = hold.id
    message.attempts += 1
    message.error_code = message.error_message = None
    message.updated_at = now
    return Claim(account_id=account.id, to=message.to, from_=message.from_, body=message.body,
                 media_urls=message.media_urls, twilio_account_sid=account.twilio_account_sid,
                 twilio_auth_token=account.twilio_auth_token)


def _reserved_hold(session: Session, message: Message) -> Hold | None:
    """The hold a campaign chunk reserved for this message, while it is still pending."""
    hold = session.get(Hold, message.hold_id) if message.hold_id else None
    return hold if hold is not None and hold.status == "pending" else None


def _cancel(session: Session, message: Message, account: Account, now: datetime) -> str:
    """The account was canceled after this message was accepted: it is never sent nor charged."""
    _void_hold(session, message, now)
    message.status = "canceled"
    message.error_message = f"Account is canceled: {account.status_reason or 'no reason given'}."[:500]
    message.credits_charged = 0 if message.hold_id else None
    message.updated_at = now
    return "canceled"


def _park(message: Message, reason: str, now: datetime) -> str:
    message.status = "parked"
    message.error_message = reason
    message.updated_at = now
    return "parked"


def _sending(session: Session, message_id: str) -> Message | None:
    """The message if it is still `sending` with no sid: the only state the outcome steps may change."""
    message = session.get(Message, message_id, with_for_update=True)
    if message is None or message.status != "sending" or message.twilio_sid is not None:
        return None
    return message


def _release(session: Session, message_id: str, now: datetime) -> None:
    """Twilio did not take the message: give the hold back and let the retry claim it afresh."""
    message = _sending(session, message_id)
    if message is None:
        return
    _void_hold(session, message, now)
    message.status = "accepted"
    message.updated_at = now


def _fail(session: Session, message_id: str, error: PermanentTwilioError, now: datetime) -> None:
    """A permanent refusal: nothing is charged, nothing is retried; 21610 also records the opt-out."""
    message = _sending(session, message_id)
    if message is None:
        return
    _void_hold(session, message, now)
    message.status = "failed"
    message.error_code = error.code
    message.error_message = error.message[:500]
    message.credits_charged = 0
    message.updated_at = now
    message_event(session, "message.failed", message_id, now=now)
    if error.recipient_opted_out:
        opt_out(session, message.account_id, message.to, FROM_TWILIO_21610)


def _block_account(session: Session, message_id: str, reason: str, now: datetime) -> None:
    """20003: the account's Twilio credentials are wrong; nothing of it sends until they are replaced."""
    message = _sending(session, message_id)
    if message is None:
        return
    _void_hold(session, message, now)
    message.status = "accepted"
    account = session.get(Account, message.account_id, with_for_update=True)
    account.sending_blocked_reason = (f"Twilio rejected the account's credentials (20003: {reason})."
                                      " Sending resumes when they are updated.")[:500]
    park_account(session, account.id, account.sending_blocked_reason, now=now)


def _store_sid(session: Session, message_id: str, sent, now: datetime) -> str:
    message = session.get(Message, message_id, with_for_update=True)
    if message is None or message.twilio_sid is not None:
        return "skipped"
    message.twilio_sid = sent.sid
    message.twilio_account_sid = sent.account_sid  # its callbacks must come signed by this account
    message.twilio_status = message.twilio_status or sent.status
    if sent.num_segments:
        message.twilio_segments = message.twilio_segments or sent.num_segments
    if message.status == "sending":
        message.status = OUR_STATUS_FOR_TWILIO.get(sent.status, "queued")
    message.updated_at = now
    message_event(session, "message.sent", message_id, now=now)
    return apply_early_statuses(session, sent.sid, now=now) or message.status  # final: the caller settles it


def _void_hold(session: Session, message: Message, now: datetime) -> None:
    hold = session.get(Hold, message.hold_id) if message.hold_id else None
    if hold is not None and hold.status == "pending":
        book.void(session, hold.id, now=now)

