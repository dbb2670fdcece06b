"""Parking: messages of an account that may not send right now wait, neither sent nor lost; a canceled
account's unsent messages are canceled instead (`cancel_unsent`), never charged.

An account parks when it is locked (a prepaid balance went below zero), when Twilio rejected its
credentials (20003), or a single message parks when its hold did not fit. Unparking puts the
messages back to `accepted` (or `scheduled`) and hands their ids to the caller to enqueue after
its commit.

Credits landing (a grant, a purchase) ask for the release at once through `credits_added`; the
sweeper releases whatever that missed.
"""

import logging
from collections.abc import Callable
from datetime import datetime

from sqlalchemy import case, exists, select, update
from sqlalchemy.orm import Session

from shared.db import Database
from shared.errors import AccountLocked, NotFound
from shared.ledger import book
from shared.models import Account, Hold, Message

log = logging.getLogger(__name__)

# Who releases an account's parked messages when told credits landed: the workers register their
# `release_parked` actor's enqueue. In a process that registered none, the sweeper does it.
_release_listeners: list[Callable[[str], None]] = []

PARKABLE_STATUSES = ("accepted", "scheduled")
UNSENT_STATUSES = ("accepted", "scheduled", "queued", "parked")  # with no sid: Twilio never had them


def blocked_reason(account: Account) -> str | None:
    """Why this account may not send now, or None."""
    if account.sending_blocked_reason:
        return account.sending_blocked_reason
    if account.status != "active":
        return f"Account is {account.status}: {account.status_reason or 'sending is paused'}."
    return None


def park_account(session: Session, account_id: str, reason: str, *, now: datetime) -> int:
    """Park every message of the account that has not been claimed for sending; returns how many."""
    result = session.execute(
        update(Message)
        .where(Message.account_id == account_id, Message.status.in_(PARKABLE_STATUSES),
               Message.direction == "outbound")
        .values(status="parked", error_message=reason, updated_at=now)
        .execution_options(synchronize_session=False)
    )
    return result.rowcount


def cancel_unsent(session: Session, account_id: str, reason: str, *, now: datetime) -> int:
    """End `canceled` every outbound message of the account Twilio never had, releasing its hold; returns how many.

    The messages are updated before any hold is voided (which locks the account row): the send step locks a
    message, then the account, so taking them in that order cannot deadlock with it. A message with a sid is
    with Twilio: it is left to its callback and settles as usual.
    """
    unsent = (Message.account_id == account_id, Message.direction == "outbound",
              Message.status.in_(UNSENT_STATUSES), Message.twilio_sid.is_(None))
    held = list(session.scalars(select(Message.hold_id).join(Hold, Hold.id == Message.hold_id)
                                .where(*unsent, Hold.status == "pending").with_for_update(of=Message)))
    count = session.execute(
        update(Message).where(*unsent)
        .values(status="canceled", error_message=reason[:500], updated_at=now,
                credits_charged=case((Message.hold_id.is_(None), None), else_=0))
        .execution_options(synchronize_session=False)
    ).rowcount
    for hold_id in held:
        book.void(session, hold_id, now=now)
    return count


def unpark_account(session: Session, account_id: str, *, now: datetime) -> list[str]:
    """Release the account's parked messages if it may send again; returns the ids to enqueue."""
    account = session.get(Account, account_id, with_for_update=True)
    if account is None or blocked_reason(account):
        return []
    ids = list(session.scalars(
        select(Message.id).where(Message.account_id == account_id, Message.status == "parked")
    ))
    if ids:
        session.execute(
            update(Message).where(Message.id.in_(ids), Message.status == "parked")
            .values(status=case((Message.send_at > now, "scheduled"), else_="accepted"), error_message=None,
                    updated_at=now)
            .execution_options(synchronize_session=False)
        )
    return ids


def accounts_with_parked_messages(session: Session) -> list[str]:
    """Accounts that have parked messages and are no longer blocked: candidates to unpark."""
    return list(session.scalars(
        select(Account.id).where(
            Account.status == "active", Account.sending_blocked_reason.is_(None),
            Account.id.in_(select(Message.account_id).where(Message.status == "parked").distinct()),
        )
    ))


def release_parked(session: Session, account_id: str, *, now: datetime) -> list[str]:
    """Unpark the account's messages if it may send and can pay for at least one; returns the ids to enqueue."""
    if not _can_afford_a_parked_message(session, account_id, now):
        return []
    return unpark_account(session, account_id, now=now)


def has_releasable(session: Session, account_id: str) -> bool:
    """The account may send and has parked messages: worth asking for a release."""
    account = session.get(Account, account_id)
    return account is not None and blocked_reason(account) is None and bool(session.scalar(select(exists().where(
        Message.account_id == account_id, Message.status == "parked"))))


def on_credits_added(listener: Callable[[str], None]) -> None:
    """Register `listener(account_id)`, which must enqueue the release (it runs after the credits' commit)."""
    if listener not in _release_listeners:
        _release_listeners.append(listener)


def credits_added(database: Database, account_id: str) -> None:
    """Credits landed on the account (after their commit): release its parked messages now, not at the next sweep."""
    if not _release_listeners:
        return
    with database.unit_of_work() as session:
        if not has_releasable(session, account_id):
            return
    for listener in _release_listeners:
        try:
            listener(account_id)
        except Exception:
            log.exception("could not ask for the release of %s's parked messages; the sweeper will", account_id)


def _can_afford_a_parked_message(session: Session, account_id: str, now: datetime) -> bool:
    """Do not release messages that would only park again for want of credits."""
    account = session.get(Account, account_id)
    if account is None or blocked_reason(account):
        return False
    cheapest = session.scalar(select(Message.credits_estimated).where(
        Message.account_id == account_id, Message.status == "parked").order_by(Message.credits_estimated).limit(1))
    try:
        available = book.available_for(session, account_id, None, now=now)
    except (AccountLocked, NotFound):
        return False
    return cheapest is not None and (available is None or available >= cheapest)
