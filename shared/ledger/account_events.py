"""An account's history of changes to its life and settings: one row per change, in the change's transaction.

Cancel, reactivate, mark spam and the operator's plan, overdraft and flag changes each write one
AccountEvent with who made it (`actor`: "operator" or the account id of the key) and what changed
(`detail`, JSON). The caller's unit of work commits it with the change, so there is no change without
its event and no event without its change.
"""

from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from shared.ledger.expiry import utc
from shared.models import AccountEvent


def record(session: Session, account_id: str, action: str, *, actor: str, detail: dict, now: datetime) -> None:
    session.add(AccountEvent(account_id=account_id, at=utc(now), action=action, actor=actor, detail=detail))
    session.flush()


def list_events(session: Session, account_id: str, *, limit: int, before_id: int | None = None) -> list[AccountEvent]:
    """Newest first; page on with the last id returned as `before_id`."""
    query = select(AccountEvent).where(AccountEvent.account_id == account_id)
    if before_id is not None:
        query = query.where(AccountEvent.id < before_id)
    return list(session.scalars(query.order_by(AccountEvent.id.desc()).limit(limit)))


def count(session: Session, account_id: str, action: str) -> int:
    """How many times the account went through `action` (its reactivations number their first cycles' grants)."""
    return session.scalar(select(func.count()).select_from(AccountEvent)
                          .where(AccountEvent.account_id == account_id, AccountEvent.action == action))
