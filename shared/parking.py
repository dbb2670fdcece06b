"""Parking: messages of an account that may not send right now wait, neither sent nor lost.

An account parks when it is locked (a prepaid balance went below zero), when Twilio rejected its
credentials (20003), or a single message parks when its hold did not fit. Unparking puts the
messages back to `accepted` (or `scheduled`) and hands their ids to the caller to enqueue after
its commit.
"""

from datetime import datetime

from sqlalchemy import case, select, update
from sqlalchemy.orm import Session

from .models import Account, Message

PARKABLE_STATUSES = ("accepted", "scheduled")


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
