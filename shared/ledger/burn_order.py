"""Which credits are spent first: priority, then soonest expiry (never-expiring last), then oldest grant, then id.

The default priorities make plan credits burn first, then rollover (oldest first) and bonus credits,
purchased credits last. The same order is used in SQL (burning, locking) and in Python (views, tests).
"""

from datetime import datetime
from typing import NamedTuple

from sqlalchemy import ColumnElement, case

from shared.models import Lot

KINDS = ("plan", "rollover", "purchase", "bonus")
DEFAULT_PRIORITY = {"plan": 10, "rollover": 20, "bonus": 20, "purchase": 30}


class BurnKey(NamedTuple):
    priority: int
    never_expires: bool
    expires_at: datetime | None
    granted_at: datetime
    id: int


def burn_key(lot) -> BurnKey:
    """Sort key of anything shaped like a Lot (priority, expires_at, granted_at, id)."""
    never = lot.expires_at is None
    return BurnKey(lot.priority, never, None if never else lot.expires_at, lot.granted_at, lot.id)


def burn_order_sql() -> list[ColumnElement]:
    """ORDER BY terms equal to burn_key, portable to PostgreSQL and SQLite (NULL expiry sorts last)."""
    return [
        Lot.priority,
        case((Lot.expires_at.is_(None), 1), else_=0),
        Lot.expires_at,
        Lot.granted_at,
        Lot.id,
    ]
