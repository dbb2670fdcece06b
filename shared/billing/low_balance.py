"""Low-balance notices: a daily email to each user whose credits fell under the account's threshold.

Owners and admins are told about the company pool, a role-`user` user about its own credits. At most
one email per user per local day: the day is claimed on the user row (`low_balance_notified_on`) by a
conditional UPDATE that commits before the email is sent, so two runs, or a retry, cannot both send.
A failed send gives the day back, so the next run tries again.
"""

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import and_, or_, select, update
from sqlalchemy.orm import Session

from shared.db import Database
from shared.email import Email, EmailSender
from shared.ledger.book import POOL_AVAILABLE
from shared.ledger.expiry import utc, zone
from shared.models import Account, User
from shared.money import format_credits

accounts = Account.__table__
users = User.__table__


@dataclass(frozen=True)
class Notice:
    user_id: str
    email: str
    name: str
    account_id: str
    account_name: str
    available: int  # millicredits
    threshold: int
    day: str  # the account's local date, "2026-11-03"
    previous_day: str | None  # what to give back if the send fails
    pool: bool  # about the company pool (owners/admins) rather than the user's own credits


def notices_due(session: Session, now: datetime, *, after: str = "", limit: int = 500) -> tuple[list[Notice], str]:
    """Notices for the next `limit` accounts (id order) with a threshold; returns them and the last account id."""
    page = list(session.execute(
        select(accounts.c.id, accounts.c.name, accounts.c.timezone, accounts.c.low_balance_threshold,
               POOL_AVAILABLE.label("pool"))
        .where(accounts.c.id > after, accounts.c.low_balance_threshold > 0).order_by(accounts.c.id).limit(limit)))
    if not page:
        return [], ""
    by_id = {a.id: a for a in page}
    days = {a.id: utc(now).astimezone(zone(a.timezone)).date().isoformat() for a in page}
    seats = session.execute(select(users).where(users.c.account_id.in_(by_id), users.c.deleted_at.is_(None),
                                                users.c.email != "").order_by(users.c.account_id, users.c.id))
    notices = []
    for seat in seats:
        account = by_id[seat.account_id]
        pool = seat.role != "user"
        available = account.pool if pool else seat.balance - seat.held
        if available >= account.low_balance_threshold or seat.low_balance_notified_on == days[account.id]:
            continue
        notices.append(Notice(seat.id, seat.email, seat.name, account.id, account.name, available,
                              account.low_balance_threshold, days[account.id], seat.low_balance_notified_on, pool))
    return notices, page[-1].id


def claim(session: Session, notice: Notice) -> bool:
    """Mark today's notice as sent for the user; False when another run already did."""
    not_today = or_(users.c.low_balance_notified_on.is_(None), users.c.low_balance_notified_on != notice.day)
    return session.execute(update(users).where(and_(users.c.id == notice.user_id, not_today))
                           .values(low_balance_notified_on=notice.day).returning(users.c.id)).first() is not None


def email_for(notice: Notice) -> Email:
    whose = "Your company's shared credits are" if notice.pool else "Your credits are"
    body = (f"Hello {notice.name},\n\n{whose} running low on {notice.account_name}: "
            f"{format_credits(notice.available)} available, under the {format_credits(notice.threshold)} "
            f"you asked to be told about.\n\nBuy credits or turn on auto-recharge to keep sending.\n")
    return Email(to=notice.email, subject=f"creditq: low balance ({format_credits(notice.available)} credits)",
                 body=body, key=f"low-balance:{notice.user_id}:{notice.day}")


def send_notices(database: Database, sender: EmailSender, *, now: datetime, batch_size: int = 500) -> int:
    """Claim and send every due notice; returns how many emails went out."""
    sent = 0
    for notice in _due(database, now, batch_size):
        with database.unit_of_work() as session:
            if not claim(session, notice):
                continue
        try:
            sender.send(email_for(notice))
        except Exception:
            with database.unit_of_work() as session:  # give the day back: the next run retries
                session.execute(update(users).where(users.c.id == notice.user_id,
                                                    users.c.low_balance_notified_on == notice.day)
                                .values(low_balance_notified_on=notice.previous_day))
            raise
        sent += 1
    return sent


def _due(database: Database, now: datetime, batch_size: int) -> Iterator[Notice]:
    after = ""
    while True:
        with database.unit_of_work() as session:
            notices, after = notices_due(session, now, after=after, limit=batch_size)
        if not after:
            return
        yield from notices
