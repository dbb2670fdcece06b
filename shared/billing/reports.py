"""The expiring report: per account, the credits that expire when its current local month ends."""

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import and_, func, not_, select
from sqlalchemy.orm import Session

from shared.billing.calendar import period_end, period_of
from shared.ledger.expiry import PROTECTED_KINDS, utc
from shared.models import Account, Lot

accounts = Account.__table__
lots = Lot.__table__


@dataclass(frozen=True)
class Expiring:
    account_id: str
    name: str
    timezone: str
    month_ends_at: datetime
    credits: int  # millicredits; the same figure as the balance's `expiring_end_of_month`


def expiring(session: Session, now: datetime, *, after: str = "", limit: int = 1000) -> list[Expiring]:
    """Accounts with credits expiring by the end of their current month (id order, keyset paged).

    Plan and rollover lots of a `rollover_protection` account are left out, as month-end keeps them; lots
    already past their expiry are gone, not expiring, whether or not their expiry entry is written yet.
    """
    rows = []
    by_zone = {tz: period_end(period_of(utc(now), tz), tz)
               for tz in session.scalars(select(accounts.c.timezone).distinct())}
    protected = and_(lots.c.kind.in_(PROTECTED_KINDS), accounts.c.rollover_protection)
    for tz, ends in by_zone.items():
        rows.extend(session.execute(
            select(accounts.c.id, accounts.c.name, accounts.c.timezone, func.sum(lots.c.remaining).label("credits"))
            .join(lots, lots.c.account_id == accounts.c.id)
            .where(accounts.c.timezone == tz, accounts.c.id > after, lots.c.remaining > 0,
                   lots.c.expires_at > utc(now), lots.c.expires_at <= ends, not_(protected))
            .group_by(accounts.c.id, accounts.c.name, accounts.c.timezone).order_by(accounts.c.id).limit(limit)))
    rows.sort(key=lambda r: r.id)
    return [Expiring(r.id, r.name, r.timezone, by_zone[r.timezone], r.credits) for r in rows[:limit]]


def all_expiring(session_factory, now: datetime, *, batch_size: int = 1000) -> Iterator[Expiring]:
    """Every page of `expiring`, each read in its own unit of work."""
    after = ""
    while True:
        with session_factory() as session:
            page = expiring(session, now, after=after, limit=batch_size)
        if not page:
            return
        yield from page
        after = page[-1].account_id
