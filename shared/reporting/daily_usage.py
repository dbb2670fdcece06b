"""What each account and user spent per local day, by kind: the ledger's entries folded after they are written.

The hot paths (settle, month-end) write their entries and nothing more; `fold_new_entries`, run by the
scheduler every minute, adds the entries written since the last fold to `daily_usage`. A read adds the
account's entries not folded yet (a few minutes' worth, found by the (account_id, id) index) to the folded
days, so it is exact whenever it runs.

Folding is idempotent and safe with two folders at once: each locks the one `daily_usage_folds` row first,
folds only entries after its `folded_through` and moves it in the same transaction, so an entry is added
exactly once. Entry ids are taken before their transactions commit, so on PostgreSQL an id may become
visible after a higher one: a fold reaches only as far as a horizon (the highest id at an earlier fold)
once every transaction that was running then has ended. SQLite has one writer at a time: its horizon is
the highest id now.
"""

from collections import defaultdict
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import BigInteger, func, select, text, update
from sqlalchemy.orm import Session
from sqlalchemy.types import NullType

from shared.db import any_of, insert_on_conflict
from shared.ids import CALL_REFERENCE
from shared.models import Account, Entry, Message, UsageDay, UsageFold

daily_usage = UsageDay.__table__
folds = UsageFold.__table__
entries = Entry.__table__
messages = Message.__table__
accounts = Account.__table__

TEXTS, MMS, CALLS, CARRIER_FEES, OTHER_FEES = "texts", "mms", "calls", "carrier_fees", "other_fees"
KINDS = (TEXTS, MMS, CALLS, CARRIER_FEES, OTHER_FEES)  # spending: what using the product cost
EXPIRED = "expired"  # credits that lapsed unspent, on the last day they could be spent (plan advice reads them)
FOLDED_ENTRY_KINDS = ("usage", "carrier_fee", "month_end_charge", "expiry")
POOL = ""  # daily_usage.user_id of the company pool's spending
FOLD_ROW = 1
FOLD_LIMIT = 20_000


@dataclass(frozen=True)
class DailyUsage:
    day: date
    kind: str
    millicredits: int
    count: int


def fold_new_entries(session: Session, *, limit: int = FOLD_LIMIT) -> int:
    """Add up to `limit` entries written since the last fold to daily_usage; answer how many were read.

    Runs in the caller's transaction and commits nothing; the lock on the marker row is held until the
    caller commits, so a second folder waits and then starts after what this one folded.
    """
    marker = _lock_marker(session)
    postgres = session.get_bind().dialect.name == "postgresql"
    folded, horizon, horizon_xid = marker.folded_through, marker.horizon_id, marker.horizon_xid
    settled = not postgres or horizon_xid is None or _oldest_running_xid(session) >= horizon_xid
    if settled and folded >= horizon:
        horizon = session.execute(select(func.coalesce(func.max(entries.c.id), 0))).scalar_one()
        horizon_xid = _next_xid(session) if postgres else None
        settled = not postgres
    read = 0
    if settled and folded < horizon:
        ids = session.execute(select(entries.c.id).where(entries.c.id > folded, entries.c.id <= horizon)
                              .order_by(entries.c.id).limit(limit)).scalars().all()
        if ids:
            read = len(ids)
            _add(session, _spending(session, entries.c.id > folded, entries.c.id <= ids[-1]))
            folded = ids[-1]
        else:
            folded = horizon
    session.execute(update(folds).where(folds.c.id == FOLD_ROW)
                    .values(folded_through=folded, horizon_id=horizon, horizon_xid=horizon_xid))
    return read


def usage_by_day(session: Session, account_id: str, *, since: date, until: date,
                 user_id: str | None = None) -> list[DailyUsage]:
    """The account's spending per local day and kind, `since` to `until` inclusive, oldest first; with
    `user_id`, only that user's (None: the whole account, pool and users together)."""
    totals: dict[tuple[date, str], list[int]] = defaultdict(lambda: [0, 0])
    query = select(daily_usage.c.day, daily_usage.c.kind, func.sum(daily_usage.c.millicredits),
                   func.sum(daily_usage.c.count)).where(
        daily_usage.c.account_id == account_id, daily_usage.c.day >= since, daily_usage.c.day <= until,
        daily_usage.c.kind.in_(KINDS))
    if user_id is not None:
        query = query.where(daily_usage.c.user_id == user_id)
    for day, kind, millicredits, count in session.execute(query.group_by(daily_usage.c.day, daily_usage.c.kind)):
        totals[(day, kind)][0] += int(millicredits)
        totals[(day, kind)][1] += int(count)
    for (_, day, user, kind), (millicredits, count) in _unfolded(session, [account_id]).items():
        if since <= day <= until and kind in KINDS and (user_id is None or user == user_id):
            totals[(day, kind)][0] += millicredits
            totals[(day, kind)][1] += count
    return [DailyUsage(day, kind, millicredits, count)
            for (day, kind), (millicredits, count) in sorted(totals.items())]


def usage_by_user(session: Session, account_id: str, *, since: date, until: date) -> dict[str | None, int]:
    """Millicredits spent per user `since` to `until` inclusive; None is the company pool."""
    totals: dict[str | None, int] = defaultdict(int)
    rows = session.execute(select(daily_usage.c.user_id, func.sum(daily_usage.c.millicredits)).where(
        daily_usage.c.account_id == account_id, daily_usage.c.day >= since, daily_usage.c.day <= until,
        daily_usage.c.kind.in_(KINDS)).group_by(daily_usage.c.user_id))
    for user, millicredits in rows:
        totals[user or None] += int(millicredits)
    for (_, day, user, kind), (millicredits, _count) in _unfolded(session, [account_id]).items():
        if since <= day <= until and kind in KINDS:
            totals[user or None] += millicredits
    return dict(totals)


def daily_totals(session: Session, account_ids: list[str], *, since_by_account: dict[str, date],
                 kinds: tuple[str, ...] = KINDS) -> dict[str, dict[date, int]]:
    """Set-wise, for a batch: per account, millicredits of `kinds` per local day from its `since` on (the whole
    account, pool and users). Two statements, whatever the batch's size, their rows fetched at once."""
    since = min(since_by_account.values(), default=date.max)
    per_day = (select(daily_usage.c.account_id, daily_usage.c.day,
                      func.sum(daily_usage.c.millicredits).cast(BigInteger).label("spent"))
               .where(any_of(session, daily_usage.c.account_id, account_ids), daily_usage.c.day >= since,
                      daily_usage.c.kind.in_(kinds))
               .group_by(daily_usage.c.account_id, daily_usage.c.day))
    totals: dict[str, dict[date, int]] = {}
    if session.get_bind().dialect.name == "postgresql":  # a row per account, its days in two arrays: fewer rows to make
        days_of = per_day.subquery()
        arrays = select(days_of.c.account_id, func.array_agg(days_of.c.day, type_=NullType()),  # lists as psycopg
                        func.array_agg(days_of.c.spent, type_=NullType()))  # reads them, no pass over each item
        for account, days, amounts in session.execute(arrays.group_by(days_of.c.account_id)).all():
            first = since_by_account[account]
            totals[account] = {day: spent for day, spent in zip(days, amounts) if day >= first}
    else:
        for account, day, spent in session.execute(per_day).all():
            if day >= since_by_account[account]:
                totals.setdefault(account, {})[day] = spent
    for (account, day, _user, kind), (millicredits, _count) in _unfolded(session, account_ids).items():
        if kind in kinds and day >= since_by_account[account]:
            days = totals.get(account) or totals.setdefault(account, {})
            days[day] = days.get(day, 0) + millicredits
    return totals


def _lock_marker(session: Session):
    """The marker row, locked for this transaction (created on first use)."""
    session.execute(insert_on_conflict(session, folds).values(id=FOLD_ROW, folded_through=0, horizon_id=0)
                    .on_conflict_do_nothing(index_elements=[folds.c.id]))
    return session.execute(update(folds).where(folds.c.id == FOLD_ROW).values(folded_through=folds.c.folded_through)
                           .returning(folds.c.folded_through, folds.c.horizon_id, folds.c.horizon_xid)).one()


def _oldest_running_xid(session: Session) -> int:
    return session.execute(text("SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint")).scalar_one()


def _next_xid(session: Session) -> int:
    """Every transaction that has an id now has one below this (ledger writers get theirs with the account lock,
    before they take entry ids)."""
    return session.execute(text("SELECT pg_snapshot_xmax(pg_current_snapshot())::text::bigint")).scalar_one()


def _unfolded(session: Session, account_ids: list[str]) -> dict[tuple[str, date, str, str], list[int]]:
    """The accounts' entries the folds have not reached yet, summed as a fold would. The marker is read first, so
    the entries are a range of the (account_id, id) index, not a scan."""
    folded = session.execute(select(folds.c.folded_through).where(folds.c.id == FOLD_ROW)).scalar_one_or_none() or 0
    return _spending(session, any_of(session, entries.c.account_id, account_ids), entries.c.id > folded)


def _spending(session: Session, *conditions) -> dict[tuple[str, date, str, str], list[int]]:
    """Folded entries matching `conditions`, summed per (account, local day, user, kind): [millicredits, count]."""
    rows = session.execute(
        select(entries.c.account_id, entries.c.user_id, entries.c.at, entries.c.kind, entries.c.amount,
               entries.c.reference, accounts.c.timezone, messages.c.id.label("message_id"), messages.c.media_urls)
        .join(accounts, accounts.c.id == entries.c.account_id)
        .outerjoin(messages, messages.c.id == entries.c.reference)
        .where(entries.c.kind.in_(FOLDED_ENTRY_KINDS), *conditions))
    zones: dict[str, ZoneInfo] = {}
    totals: dict[tuple[str, date, str, str], list[int]] = defaultdict(lambda: [0, 0])
    for row in rows:
        zone = zones.get(row.timezone) or zones.setdefault(row.timezone, ZoneInfo(row.timezone))
        # an expiry is dated the instant its lot lapsed (a local midnight): it counts on the day before, its last
        at = row.at - timedelta(microseconds=1) if row.kind == "expiry" else row.at
        key = (row.account_id, _local_day(at, zone), row.user_id or POOL, _kind(row))
        totals[key][0] -= row.amount
        totals[key][1] += 1
    return totals


def _local_day(at: datetime, zone: ZoneInfo) -> date:
    if at.tzinfo is None:  # SQLite gives back the UTC instant without its offset
        at = at.replace(tzinfo=ZoneInfo("UTC"))
    return at.astimezone(zone).date()


def _kind(row) -> str:
    if row.kind == "expiry":
        return EXPIRED
    if row.kind == "carrier_fee":
        return CARRIER_FEES
    if row.kind == "usage" and row.message_id is not None:
        return MMS if row.media_urls else TEXTS
    if row.kind == "usage" and (row.reference or "").startswith(CALL_REFERENCE):
        return CALLS  # a call's minutes, detection, voicemail and transcription
    return OTHER_FEES


def _add(session: Session, spending: dict[tuple[str, date, str, str], list[int]]) -> None:
    """Upsert in key order, so two transactions adding to the same rows lock them in the same order."""
    if not spending:
        return
    statement = insert_on_conflict(session, daily_usage)
    statement = statement.on_conflict_do_update(
        index_elements=[daily_usage.c.account_id, daily_usage.c.day, daily_usage.c.user_id, daily_usage.c.kind],
        set_=dict(millicredits=daily_usage.c.millicredits + statement.excluded.millicredits,
                  count=daily_usage.c.count + statement.excluded.count))
    session.execute(statement, [dict(account_id=account, day=day, user_id=user, kind=kind, millicredits=mc, count=n)
                                for (account, day, user, kind), (mc, n) in sorted(spending.items())])
