"""When credits expire: local midnights in the account's time zone, returned as aware UTC instants.

A lot lives through whole local days. Rollover credits granted on 2020-09-01 last through 2021-08-31
and expire at 2021-09-01T00:00 local; plan credits expire when their cycle ends. Cycles count from the
local month of the account's cycle anchor (its creation, or its last reactivation), so plan credits
granted on the 10th of that month, with the plan, expire at the end of that first cycle, not a month
after the grant.
"""

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timezone
from typing import Protocol
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

ROLLOVER_MONTHS = 12
PROTECTED_KINDS = ("plan", "rollover")  # what rollover protection keeps from expiring while it is on
NEVER_EXPIRING_KINDS = ("purchase", "bonus")  # what stays through everything but a spam flag
CYCLE_MONTHS = {"monthly": 1, "quarterly": 3, "yearly": 12}


def zone(name: str) -> ZoneInfo:
    """The IANA zone; ValueError for a name that is not one."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"{name!r} is not an IANA time zone such as 'America/New_York'") from None


def add_months(day: date, months: int) -> date:
    """The same day `months` later; a day the target month lacks (Jan 31 + 1, Feb 29 + 12) becomes the 1st after.

    So a lot never loses a day: granted on Feb 29 2020, rollover credits last through Feb 28 2021.
    """
    index = day.year * 12 + day.month - 1 + months
    year, month = divmod(index, 12)
    try:
        return date(year, month + 1, day.day)
    except ValueError:
        year, month = divmod(index + 1, 12)
        return date(year, month + 1, 1)


def local_midnight(day: date, tz: ZoneInfo) -> datetime:
    """Start of `day` in `tz` as an aware UTC datetime (a midnight skipped by DST maps to the first instant after)."""
    return datetime(day.year, day.month, day.day, tzinfo=tz).astimezone(timezone.utc)


def local_date(instant: datetime, tz: ZoneInfo) -> date:
    return instant.astimezone(tz).date()


def expires_after_months(granted_at: datetime, tz_name: str, months: int) -> datetime:
    """Local midnight that starts the day `months` after the grant's local date."""
    tz = zone(tz_name)
    return local_midnight(add_months(local_date(granted_at, tz), months), tz)


def rollover_expiry(granted_at: datetime, tz_name: str) -> datetime:
    return expires_after_months(granted_at, tz_name, ROLLOVER_MONTHS)


def cycle_end(granted_at: datetime, anchor: datetime, tz_name: str, cycle: str) -> datetime:
    """When plan credits granted at `granted_at` expire: the end of the cycle they were granted in, cycles
    counted from the local month of `anchor` (the account's cycle anchor)."""
    tz = zone(tz_name)
    first = local_date(anchor, tz).replace(day=1)
    granted = local_date(granted_at, tz)
    months = (granted.year - first.year) * 12 + granted.month - first.month
    length = CYCLE_MONTHS[cycle]
    return local_midnight(add_months(first, (months // length + 1) * length), tz)


def end_of_month(now: datetime, tz_name: str) -> datetime:
    """The instant the account's current local month ends (the next month's first midnight)."""
    tz = zone(tz_name)
    today = local_date(now, tz)
    return local_midnight(add_months(today.replace(day=1), 1), tz)


def default_expiry(kind: str, granted_at: datetime, tz_name: str, cycle: str, anchor: datetime) -> datetime | None:
    """plan: end of its cycle (counted from `anchor`, the account's cycle anchor); rollover: 12 months;
    purchase and bonus: never."""
    if kind == "plan":
        return cycle_end(granted_at, anchor, tz_name, cycle)
    if kind == "rollover":
        return rollover_expiry(granted_at, tz_name)
    return None


class LotLike(Protocol):
    user_id: str | None
    kind: str
    remaining: int
    expires_at: datetime | None


@dataclass(frozen=True)
class PendingHold:
    """What lapsing needs of a pending hold: whose credits it draws on (None: the pool), since when, how much."""

    wallet: str | None
    created_at: datetime
    amount: int


def can_lapse(lot: LotLike, protected: bool) -> bool:
    """Whether the lot expires at all: it has an expiry, and rollover protection does not keep it."""
    return lot.expires_at is not None and not (protected and lot.kind in PROTECTED_KINDS)


def lapsing(open_lots: Sequence[LotLike], pending: Iterable[PendingHold], now: datetime, *,
            protected: bool) -> list[tuple[LotLike, int]]:
    """(lot, mc) of every lot past its expiry by `now`: what lapses, less what pending holds still need.

    `open_lots` are in burn order. A hold taken before a lot expired may still be paid from it (held at
    23:59, settled at 00:01): each wallet's holds are laid over its lots in burn order, and a lot keeps
    the part that the holds taken before its `expires_at` cover. Holds taken later never keep an
    expired lot, because the reservation that took them first wrote the expiry.
    """
    holds_of: dict[str | None, list[PendingHold]] = {}
    for hold in pending:
        holds_of.setdefault(hold.wallet, []).append(hold)
    covered: dict[str | None, int] = {}
    pieces = []
    for lot in open_lots:
        wallet = lot.user_id
        expires_at = None if lot.expires_at is None else utc(lot.expires_at)
        promised = sum(hold.amount for hold in holds_of.get(wallet, ())
                       if expires_at is None or utc(hold.created_at) < expires_at)
        kept = min(lot.remaining, max(0, promised - covered.get(wallet, 0)))
        covered[wallet] = covered.get(wallet, 0) + kept
        if can_lapse(lot, protected) and expires_at <= now and lot.remaining > kept:
            pieces.append((lot, lot.remaining - kept))
    return pieces


def next_expiry(lots_left: Iterable[tuple[LotLike, int]], protected: bool) -> datetime | None:
    """The soonest expiry among (lot, remaining) pairs that can still lapse; None when none can."""
    return min((utc(lot.expires_at) for lot, remaining in lots_left if remaining > 0 and can_lapse(lot, protected)),
               default=None)


def utc(instant: datetime) -> datetime:
    """An aware UTC datetime; a naive one is read as UTC (SQLite hands back what was stored, minus the offset)."""
    if instant.tzinfo is None:
        return instant.replace(tzinfo=timezone.utc)
    return instant.astimezone(timezone.utc)
