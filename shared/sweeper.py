"""The sweeper: the periodic safety net that makes every accepted message end final.

- Scheduled messages whose `send_at` has come are released (`accepted`) and enqueued; accepted
  messages whose job was lost (intake's enqueue failed, a worker died holding it) are enqueued
  again. The send step is idempotent, so a spare job is harmless.
- Holds past their TTL are expired and reconciled with Twilio: the message is fetched, its status
  recorded, and it is settled or voided.
- Parked messages of accounts that may send again (unlocked by a purchase, credentials fixed) are
  released.
"""

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from . import ledger
from .db import Database
from .errors import AccountLocked, NotFound
from .message_status import record_status
from .models import Account, Hold, Message
from .parking import accounts_with_parked_messages, blocked_reason, unpark_account
from .rates import RateCard
from .settlement import CHARGED_STATUSES, VOIDED_STATUSES, settle_message
from .twilio_errors import PermanentTwilioError, TransientTwilioError

BATCH = 500
UNKNOWN_OUTCOME = ("The send's outcome is unknown: the worker stopped after asking Twilio and no sid or"
                   " callback arrived. Not charged.")


@dataclass
class SweepReport:
    enqueued: list[str] = field(default_factory=list)
    reconciled: dict[str, str] = field(default_factory=dict)  # message id -> what reconciliation did
    unparked: list[str] = field(default_factory=list)


def sweep(database: Database, *, enqueue: Callable[[str], None],
          gateway_for: Callable[[str | None, str | None], object], rate_card: RateCard, now: datetime,
          stale_after: timedelta) -> SweepReport:
    """One pass. `enqueue(message_id)` sends the send job; `stale_after` is how long a waiting message may wait."""
    report = SweepReport()
    with database.unit_of_work() as session:
        report.enqueued = _stale_waiting(session, now, now - stale_after)
    for hold_id, message_id in _overdue_holds(database, now):
        report.reconciled[message_id] = reconcile(database, message_id, hold_id, gateway_for=gateway_for,
                                                  rate_card=rate_card, now=now)
    with database.unit_of_work() as session:
        account_ids = accounts_with_parked_messages(session)
    for account_id in account_ids:
        with database.unit_of_work() as session:
            if _can_afford_a_parked_message(session, account_id):
                report.unparked += unpark_account(session, account_id, now=now)
    for message_id in report.enqueued + report.unparked:
        enqueue(message_id)
    return report


def _stale_waiting(session: Session, now: datetime, before: datetime) -> list[str]:
    """Scheduled messages whose time has come (now `accepted`) and accepted ones waiting since `before`."""
    due = list(session.scalars(
        select(Message.id).where(Message.status == "scheduled", Message.send_at <= now).limit(BATCH)
    ))
    if due:
        session.execute(update(Message).where(Message.id.in_(due), Message.status == "scheduled")
                        .values(status="accepted", updated_at=now).execution_options(synchronize_session=False))
    stale = session.scalars(
        select(Message.id).where(Message.status == "accepted", Message.updated_at <= before)
        .order_by(Message.updated_at).limit(BATCH)
    )
    return due + list(stale)


def _overdue_holds(database: Database, now: datetime) -> list[tuple[int, str]]:
    """(hold, message) pairs whose hold outlived its TTL and whose message is not settled yet."""
    with database.unit_of_work() as session:
        return [tuple(row) for row in session.execute(
            select(Hold.id, Message.id).join(Message, Message.hold_id == Hold.id)
            .where(Hold.status.in_(("pending", "expired")), Hold.expires_at <= now,
                   Message.credits_charged.is_(None))
            .order_by(Hold.expires_at).limit(BATCH)
        )]


def reconcile(database: Database, message_id: str, hold_id: int, *, gateway_for, rate_card: RateCard,
              now: datetime) -> str:
    """Expire the hold, ask Twilio what became of the message, then settle or void it."""
    with database.unit_of_work() as session:
        ledger.expire(session, hold_id, now=now)
        message = session.get(Message, message_id)
        account = session.get(Account, message.account_id)
        sid, status = message.twilio_sid, message.status
        credentials = (account.twilio_account_sid, account.twilio_auth_token)
    if status not in CHARGED_STATUSES + VOIDED_STATUSES:
        if sid is None:
            if status != "sending":
                return "waiting"
            with database.unit_of_work() as session:
                _give_up_unknown(session, message_id, now)
            return "voided: outcome unknown"
        try:
            fetched = gateway_for(*credentials).fetch(sid)
        except TransientTwilioError:
            return "retry later"
        except PermanentTwilioError as error:
            return f"fetch refused: {error}"
        with database.unit_of_work() as session:
            record_status(session, sid=sid, status=fetched.status, num_segments=fetched.num_segments,
                          error_code=fetched.error_code, error_message=fetched.error_message,
                          price=fetched.price, price_unit=fetched.price_unit, now=now)
    with database.unit_of_work() as session:
        return settle_message(session, message_id, rate_card=rate_card, now=now)


def _give_up_unknown(session: Session, message_id: str, now: datetime) -> None:
    """No sid and no callback within the hold's TTL: Twilio never told us it took the message."""
    message = session.get(Message, message_id, with_for_update=True)
    if message.status != "sending" or message.twilio_sid is not None:
        return
    message.status = "failed"
    message.error_message = UNKNOWN_OUTCOME
    message.credits_charged = 0
    message.updated_at = now


def _can_afford_a_parked_message(session: Session, account_id: str) -> bool:
    """Do not release messages that would only park again for want of credits."""
    account = session.get(Account, account_id)
    if blocked_reason(account):
        return False
    cheapest = session.scalar(select(Message.credits_estimated).where(
        Message.account_id == account_id, Message.status == "parked").order_by(Message.credits_estimated).limit(1))
    try:
        available = ledger.available_for(session, account_id, None)
    except (AccountLocked, NotFound):
        return False
    return cheapest is not None and (available is None or available >= cheapest)
