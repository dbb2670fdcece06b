"""The credit ledger: lots burn down, holds reserve before a send, entries record every movement.

Every function takes the caller's Session and never commits: it runs inside the caller's unit of
work (`Database.unit_of_work()`), so a send can reserve and mark itself `sending` in one transaction.
`reserve` and `settle` also take the Connection of `Database.one_statement()` when the call is the whole
unit of work: on PostgreSQL the function call then commits by itself, and only the rare call that must
write an expiry first wraps its statements in a transaction (`_atomic`).
Amounts are integer millicredits; instants are aware datetimes, stored as UTC. `now` always comes
from the caller.

Wallets: lots with `user_id` NULL are the company pool (shared by owners and admins); lots with a
`user_id` are that user's own credits (role `user`). `accounts.balance`/`held` are the totals,
`accounts.allocated`/`allocated_held` the users' share, so the pool is `balance - allocated` and a
pool reservation is one conditional UPDATE. A pool below zero is debt: its lots are empty and the
next grant into the pool repays it before it adds to a lot.

Expiry happens at spend time: the first operation on an account at or after a lot's `expires_at`
writes the lot's `expiry` entry, dated `expires_at` (`_lapse_due`), and reads never count an expired
lot (`lapsed`). `accounts.next_expiry_at` says when that is next needed, so a reservation stays one
conditional UPDATE; credits a pending hold took before the expiry stay for it (expiry.lapsing).

Lock order, everywhere: hold -> account -> user -> lots. The account row serializes every change to
its users and lots, so lots are burned by one UPDATE in burn order without locking them one by one.
Every operation is keyed: replaying it with its idempotency key changes nothing.
"""

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from types import SimpleNamespace

import orjson
from sqlalchemy import Connection, Row, and_, bindparam, case, delete, func, insert, or_, select, update
from sqlalchemy.orm import Session

from shared.db import any_of, copy_rows, dialect_name, insert_on_conflict, prepared
from shared.errors import AccountLocked, Conflict, InsufficientCredits, NotFound, ValidationFailed
from shared.events.outbox import account_locked, account_unlocked
from shared.ledger.burn_order import DEFAULT_PRIORITY, KINDS, burn_order_sql
from shared.ledger.expiry import (
    NEVER_EXPIRING_KINDS,
    PROTECTED_KINDS,
    PendingHold,
    can_lapse,
    default_expiry,
    end_of_month,
    lapsing,
    next_expiry,
    utc,
)
from shared.ledger.plpgsql import RESERVE as PG_RESERVE
from shared.ledger.plpgsql import RESERVE_EACH as PG_RESERVE_EACH
from shared.ledger.plpgsql import SETTLE as PG_SETTLE
from shared.ledger.plpgsql import SETTLE_MANY as PG_SETTLE_MANY
from shared.models import Account, Entry, Hold, Lot, User

accounts = Account.__table__
users = User.__table__
lots = Lot.__table__
holds = Hold.__table__
entries = Entry.__table__

LOCK_REASON = "balance below zero after a settlement; add credits to unlock"
USER_LOCK_REASON = "its own credits went below zero after a settlement; an owner or admin must give it more credits"
POOL_AVAILABLE = (accounts.c.balance - accounts.c.allocated) - (accounts.c.held - accounts.c.allocated_held)


class _DefaultExpiry:
    def __repr__(self) -> str:
        return "DEFAULT_EXPIRY"


DEFAULT_EXPIRY = _DefaultExpiry()  # grant(): the kind's usual expiry (see expiry.default_expiry)


@dataclass(frozen=True)
class HoldView:
    id: int
    account_id: str
    user_id: str | None
    amount: int
    from_allocation: bool  # drawn on user_id's own credits rather than the pool
    status: str  # pending, settled, voided, expired
    reference: str | None
    idempotency_key: str
    expires_at: datetime
    settled_amount: int | None


@dataclass(frozen=True)
class Settlement:
    hold: HoldView
    charged: int  # actual + carrier fee
    balance: int  # the account's balance after this settlement
    status: str  # the account's status after it: `locked` when a prepaid pool went below zero
    # the answer of an earlier settlement under the same key, nothing written now; the same settlement all the same
    replayed: bool = field(default=False, compare=False)


@dataclass(frozen=True)
class LotView:
    id: int
    account_id: str
    user_id: str | None
    kind: str
    amount: int
    remaining: int
    priority: int
    granted_at: datetime
    expires_at: datetime | None
    reference: str | None


@dataclass(frozen=True)
class UserCredits:
    id: str
    name: str
    role: str
    monthly_credits: int | None  # None: shares the pool
    balance: int
    held: int

    @property
    def available(self) -> int:
        return self.balance - self.held


@dataclass(frozen=True)
class BalanceView:
    account_id: str
    status: str
    balance: int
    held: int
    pool_available: int  # what owners and admins can still reserve, before any overdraft limit
    expiring_end_of_month: int
    lots: list[LotView]
    users: list[UserCredits]

    @property
    def available(self) -> int:
        return self.balance - self.held


# --- holds -----------------------------------------------------------------------------------------

def reserve(session: Session | Connection, account_id: str, amount_mc: int, *, user_id: str | None = None,
            reference: str | None = None, idempotency_key: str, ttl_seconds: int, now: datetime,
            then: tuple[str, tuple] | None = None) -> HoldView:
    """Hold `amount_mc` for a send. Two statements: an INSERT, then a conditional UPDATE of the account row, which
    stays locked only from there to the commit (a refusal deletes the hold again).

    Raises InsufficientCredits, AccountLocked (status not active) or NotFound. Replaying the key
    returns the first hold, whatever the balance is now. On PostgreSQL: one call of ledger_reserve.

    `then` (PostgreSQL only; elsewhere the caller runs its own): a data-modifying statement and its parameters
    (psycopg's `%s`) that runs in the reservation's round trip, after it, wherever a hold is answered; it reads
    that hold as the one-row table `held` (the holds columns), and must not write the rows the reservation wrote
    (its account, user or hold). A claim marks its message sending there, so the account's row, which the
    reservation locks, is not held through another round trip before COMMIT.
    """
    _require(amount_mc > 0, "amount", "must be more than zero")
    now = utc(now)
    if _on_postgres(session):
        expires_at = now + timedelta(seconds=ttl_seconds)
        connection = _sql(session)
        statement, extra = (PG_RESERVE, ()) if then is None else (_RESERVE_THEN.format(then=then[0]), then[1])
        call = lambda gate: _call_function(connection, statement, (  # noqa: E731
            account_id, user_id, amount_mc, reference, idempotency_key, now, expires_at, gate, *extra))
        row = call(True)
        if row.outcome != "expiry_due":
            return _function_hold(session, row, account_id, user_id, amount_mc)
        with _atomic(connection):  # the expiry and the reservation, one transaction also for a lone call
            _lapse_due(session, _lock_account(session, account_id), now)
            return _function_hold(session, call(False), account_id, user_id, amount_mc)
    wallet = _wallet_of(session, account_id, user_id) if user_id is not None else None
    values = dict(account_id=account_id, user_id=user_id, amount=amount_mc, from_allocation=wallet is not None,
                  status="pending", reference=reference, idempotency_key=idempotency_key, created_at=now,
                  expires_at=now + timedelta(seconds=ttl_seconds))
    hold = _hold_then_claim(session, values, wallet, gate=now)
    if hold is None and _expiry_due(session, account_id, now):
        _lapse_due(session, _lock_account(session, account_id), now)
        hold = _hold_then_claim(session, values, wallet, gate=None)
    if hold is None:
        raise _refusal(session, account_id, wallet, amount_mc)
    return hold


@dataclass(frozen=True)
class Reservation:
    """One hold of a `reserve_each` batch: `reserve`'s arguments."""

    account_id: str
    amount: int
    idempotency_key: str
    ttl_seconds: int
    user_id: str | None = None
    reference: str | None = None


def reserve_each(session: Session | Connection, reservations: list[Reservation], *, now: datetime,
                 then: tuple[str, tuple] | None = None) -> list[HoldView | InsufficientCredits | AccountLocked]:
    """`reserve` for each of a batch, each meeting its own fate, in one round trip on PostgreSQL (one call of
    ledger_reserve each): its hold, or the refusal `reserve` would raise. The accounts' rows are locked in their ids'
    order, whatever the batch's, so two batches never wait on each other in a ring. Other errors raise.

    `then` as `reserve` takes it, run once after all of them: `held` is every hold answered. A reservation whose
    account has an expiry to write first is made alone afterwards (`reserve`, with `then` too).
    """
    now = utc(now)
    if not reservations:
        return []
    if not _on_postgres(session):
        return [_reserved_or_refused(lambda r=reservation: _reserve_one(session, r, now, then)) for reservation in
                reservations]
    order = sorted(range(len(reservations)), key=lambda i: (reservations[i].account_id, i))
    each = [reservations[i] for i in order]
    statement = PG_RESERVE_EACH if then is None else _RESERVE_THEN_SQL.format(reserve=PG_RESERVE_EACH, then=then[0])
    batch = _batch_json([{"account_id": r.account_id, "user_id": r.user_id, "amount": r.amount,
                          "reference": r.reference, "idempotency_key": r.idempotency_key,
                          "expires_at": now + timedelta(seconds=r.ttl_seconds)} for r in each])
    with prepared(_sql(session), statement, (batch, now, *(then[1] if then else ()))) as cursor:
        rows = cursor.fetchall()
    outcomes: list = [None] * len(reservations)
    for row in rows:
        i = order[row.position - 1]
        reservation = reservations[i]
        if row.outcome == "expiry_due":
            outcomes[i] = _reserved_or_refused(lambda r=reservation: _reserve_one(session, r, now, then))
        else:
            outcomes[i] = _reserved_or_refused(lambda r=reservation, row=row: _function_hold(
                session, row, r.account_id, r.user_id, r.amount))
    return outcomes


def _reserve_one(session: Session | Connection, reservation: Reservation, now: datetime,
                 then: tuple[str, tuple] | None) -> HoldView:
    return reserve(session, reservation.account_id, reservation.amount, user_id=reservation.user_id,
                   reference=reservation.reference, idempotency_key=reservation.idempotency_key,
                   ttl_seconds=reservation.ttl_seconds, now=now, then=then)


def _reserved_or_refused(reserving: Callable[[], HoldView]) -> HoldView | InsufficientCredits | AccountLocked:
    try:
        return reserving()
    except (InsufficientCredits, AccountLocked) as refused:
        return refused


def _hold_then_claim(session: Session, values: dict, wallet: str | None, *, gate: datetime | None) -> HoldView | None:
    """ledger_reserve's order: the hold inserted, then the account (and wallet) claimed; a replay answers the key's
    first hold and claims nothing. None, with the hold deleted again, when there is no room."""
    hold_id = _sql(session).execute(
        insert_on_conflict(session, holds).values(**values)
        .on_conflict_do_nothing(index_elements=[holds.c.idempotency_key]).returning(holds.c.id)
    ).scalar()
    if hold_id is None:
        return _hold_where(session, holds.c.idempotency_key == values["idempotency_key"])
    if not _claim(session, values["account_id"], wallet, values["amount"], gate=gate):
        _sql(session).execute(delete(holds).where(holds.c.id == hold_id))
        return None
    return HoldView(id=hold_id, settled_amount=None, **{key: value for key, value in values.items()
                                                        if key != "created_at"})


@dataclass(frozen=True)
class HoldRequest:
    """One hold of a `reserve_many` batch."""

    idempotency_key: str
    amount: int
    reference: str | None
    expires_at: datetime


def reserve_many(session: Session, account_id: str, requests: list[HoldRequest], *, now: datetime,
                 alongside: Callable[[list[HoldView]], None] | None = None,
                 user_id: str | None = None, fresh_keys: bool = False) -> list[HoldView]:
    """Hold a batch for `user_id` (from its own credits if its role is `user`, else the pool), all or nothing:
    the holds inserted first, then one conditional UPDATE of the account row last, so the row is locked only
    from that UPDATE to the caller's commit.

    For a campaign chunk: each message still gets its own hold (settled, voided or expired on its
    own), but the hot account row is hit once per batch and concurrent batches insert side by side.
    `alongside(holds)` writes what belongs with the holds (the chunk's messages) before the row is
    locked; a refusal rolls its writes back with the holds. Raises InsufficientCredits or AccountLocked
    for the batch's total; keys already held are answered with their first hold, not held again (a
    twin batch running at the same moment fails on the unique key instead, and its retry is answered
    so). `fresh_keys`: the caller made every key just now (from ids it generated), so there is no first hold to
    look for; a key used before would still fail on the unique key. An expiry due at `now` is written before the
    batch holds: the UPDATE refuses while one is due.
    """
    _require(all(request.amount > 0 for request in requests), "amount", "must be more than zero")
    now = utc(now)
    wallet = _wallet_of(session, account_id, user_id) if user_id is not None else None
    views, total, claimed = _hold_batch(session, account_id, user_id, wallet, requests, now, alongside, gate=now,
                                        fresh_keys=fresh_keys)
    if not claimed and _expiry_due(session, account_id, now):
        _lapse_due(session, _lock_account(session, account_id), now)
        views, total, claimed = _hold_batch(session, account_id, user_id, wallet, requests, now, alongside, gate=None,
                                            fresh_keys=fresh_keys)
    if not claimed:
        raise _refusal(session, account_id, wallet, total)
    return views


def _hold_batch(session: Session, account_id: str, user_id: str | None, wallet: str | None,
                requests: list[HoldRequest], now: datetime, alongside: Callable[[list[HoldView]], None] | None, *,
                gate: datetime | None, fresh_keys: bool) -> tuple[list[HoldView], int, bool]:
    """Insert the batch's new holds and `alongside`'s writes, then claim their total, in a savepoint that a
    refusal rolls back; returns the holds, the total of the new ones and whether it was claimed."""
    savepoint = session.begin_nested()
    keys = [request.idempotency_key for request in requests]
    views = {} if fresh_keys else {
        row.idempotency_key: _hold_view(row)
        for row in _sql(session).execute(select(holds).where(any_of(session, holds.c.idempotency_key, keys)))}
    new = [request for request in requests if request.idempotency_key not in views]
    for hold_id, request in zip(_new_hold_ids(session, len(new)), new):
        views[request.idempotency_key] = HoldView(
            id=hold_id, account_id=account_id, user_id=user_id, amount=request.amount,
            from_allocation=wallet is not None,
            status="pending", reference=request.reference, idempotency_key=request.idempotency_key,
            expires_at=utc(request.expires_at), settled_amount=None)
    copy_rows(session, holds, [dict(id=views[request.idempotency_key].id, account_id=account_id, user_id=user_id,
                                    amount=request.amount, from_allocation=wallet is not None, status="pending",
                                    reference=request.reference, idempotency_key=request.idempotency_key,
                                    created_at=now, expires_at=utc(request.expires_at)) for request in new])
    batch = [views[key] for key in keys]
    total = sum(request.amount for request in new)
    if alongside is not None:
        alongside(batch)
    if total == 0 or _claim(session, account_id, wallet, total, gate=gate):
        savepoint.commit()
        return batch, total, True
    savepoint.rollback()
    return batch, total, False


def settle(session: Session | Connection, hold: int | str, actual_mc: int, *, carrier_fee_mc: int = 0,
           reference: str | None = None, idempotency_key: str, now: datetime) -> Settlement:
    """Charge what the send really cost (more or less than the hold) and release the hold.

    `hold` is its id or its idempotency key. Writes a `usage` entry (and `carrier_fee` when non-zero),
    burns lots in burn order, and locks a prepaid account whose pool ends below zero. A hold on a user's
    own credits is paid from them alone, even past zero: that user is then locked (USER_LOCK_REASON) until
    credits bring it back to zero, while the pool and the other users go on. An expired hold
    can still be settled once (reconciliation found the message was sent). Replays return the first
    settlement; settling a voided hold, or again under another key, is a Conflict. On PostgreSQL: one call
    of ledger_settle.
    """
    request = SettleRequest(hold, actual_mc, idempotency_key=idempotency_key, carrier_fee_mc=carrier_fee_mc,
                            reference=reference)
    return settle_many(session, [request], now=now)[0]


@dataclass(frozen=True)
class SettleRequest:
    """One settlement of a `settle_many` batch: what `settle` takes."""

    hold: int | str
    actual_mc: int
    idempotency_key: str
    carrier_fee_mc: int = 0
    reference: str | None = None


def settle_many(session: Session | Connection, requests: list[SettleRequest], *, now: datetime,
                then: tuple[str, tuple] | None = None) -> list[Settlement]:
    """Settle each request as `settle` does, in the order given; their answers in that order. On PostgreSQL one
    round trip for the batch (ledger_settle once per request, in order, in one statement), so a group commit of
    callbacks settles its messages in one. A Conflict for one raises for the batch: run it in a unit of work.

    `then` (PostgreSQL only; elsewhere the caller runs its own): a data-modifying statement and its parameters
    (psycopg's `%s`) that runs in the batch's round trip, after its settlements; it reads the holds this call
    settled as the table `settled` (the holds columns). A replay (`Settlement.replayed`) is not among them: its
    caller runs its own. A message's settlement writes its charge there, a round trip less.
    """
    for request in requests:
        _require(request.actual_mc >= 0, "actual", "must not be negative")
        _require(request.carrier_fee_mc >= 0, "carrier_fee", "must not be negative")
    now = utc(now)
    if not _on_postgres(session):
        return [_settle_here(session, request, now) for request in requests]
    connection = _sql(session)
    answers = _settle_calls(connection, requests, now, then, gate=True)
    due = [index for index, row in enumerate(answers) if row.outcome == "expiry_due"]
    if due:
        with _atomic(connection):  # the expiries and their settlements, one transaction also for a lone call
            for index in due:
                _lapse_before_settling(session, requests[index].hold, now)
            again = _settle_calls(connection, [requests[index] for index in due], now, then, gate=False)
            for index, row in zip(due, again):
                answers[index] = row
    return [_function_settlement(session, row, request, now) for row, request in zip(answers, requests)]


def _settle_calls(connection: Connection, requests: list[SettleRequest], now: datetime,
                  then: tuple[str, tuple] | None, *, gate: bool) -> list[tuple]:
    """ledger_settle's answers, one per request in order, from one statement: for a lone request, the call with
    its values; for more, the call over arrays of them."""
    if len(requests) == 1:
        call, values = PG_SETTLE, _settle_arguments(requests[0])
    else:
        call, values = PG_SETTLE_MANY, (_batch_json([dict(zip(_SETTLE_ARGUMENTS, _settle_arguments(request)))
                                                     for request in requests]),)
    statement, extra = (call, ()) if then is None else (_SETTLE_THEN.format(call=call, then=then[0]), then[1])
    with prepared(connection, statement, (*values, now, LOCK_REASON, gate, *extra)) as cursor:
        return cursor.fetchall()


_SETTLE_ARGUMENTS = ("hold_id", "hold_key", "actual", "carrier_fee", "reference", "idempotency_key")


def _settle_arguments(request: SettleRequest) -> tuple:
    """ledger_settle's own arguments for the request: hold id, hold key, actual, carrier fee, reference, key."""
    hold = request.hold
    return (hold if isinstance(hold, int) else None, hold if isinstance(hold, str) else None, request.actual_mc,
            request.carrier_fee_mc, request.reference, request.idempotency_key)


def _settle_here(session: Session, request: SettleRequest, now: datetime) -> Settlement:
    """ledger_settle's statements, in Python (SQLite)."""
    hold, actual_mc, carrier_fee_mc = request.hold, request.actual_mc, request.carrier_fee_mc
    reference, idempotency_key = request.reference, request.idempotency_key
    charge = actual_mc + carrier_fee_mc
    _lapse_before_settling(session, hold, now)
    resolution = dict(status="settled", resolved_at=now, settled_amount=charge)
    row = _resolve(session, hold, "pending", resolution)
    released = True
    if row is None:
        row = _resolve(session, hold, "expired", resolution)
        released = False
        if row is None:
            return _settlement_replay(session, hold, idempotency_key)
    held_release = row.amount if released else 0
    from_user = 0
    if row.from_allocation:  # the user's own credits pay all of it, below zero if need be (the user is then locked)
        _lock_account(session, row.account_id)
        from_user = charge
        _sql(session).execute(update(users).where(users.c.id == row.user_id)
                        .values(held=users.c.held - held_release, balance=users.c.balance - from_user))
    from_pool = charge - from_user
    goes_negative = and_(accounts.c.status == "active", accounts.c.overdraft_policy == "prepaid",
                         accounts.c.balance - accounts.c.allocated - from_pool < 0)
    account = _sql(session).execute(
        update(accounts).where(accounts.c.id == row.account_id).values(
            held=accounts.c.held - held_release,
            allocated_held=accounts.c.allocated_held - (held_release if row.from_allocation else 0),
            allocated=accounts.c.allocated - from_user,
            balance=accounts.c.balance - charge,
            status=case((goes_negative, "locked"), else_=accounts.c.status),
            status_reason=case((goes_negative, LOCK_REASON), else_=accounts.c.status_reason),
        ).returning(accounts.c.balance, accounts.c.status, accounts.c.next_expiry_at)
    ).one()
    if from_user:
        _burn(session, row.account_id, row.user_id, from_user)
    if from_pool:
        _burn(session, row.account_id, None, from_pool)
    common = dict(account_id=row.account_id, user_id=row.user_id, at=now, reference=reference or row.reference,
                  hold_id=row.id, memo=None)
    lines = [dict(common, kind="usage", amount=-actual_mc, balance_after=account.balance + carrier_fee_mc,
                  idempotency_key=idempotency_key)]
    if carrier_fee_mc:
        lines.append(dict(common, kind="carrier_fee", amount=-carrier_fee_mc, balance_after=account.balance,
                          idempotency_key=f"{idempotency_key}:carrier_fee"))
    _write(session, lines)
    if _due(account.next_expiry_at, now):
        _lapse_due(session, _lock_account(session, row.account_id), now)
    return Settlement(hold=_hold_view(row), charged=charge, balance=account.balance, status=account.status)


def void(session: Session, hold: int | str, *, now: datetime) -> HoldView:
    """Release a hold without charging (the send failed for good). Voiding again, or an expired hold, is a no-op."""
    row = _resolve(session, hold, "pending", dict(status="voided", resolved_at=utc(now)))
    if row is None:
        current = _existing_hold(session, hold)
        if current.status == "settled":
            raise Conflict(f"hold {current.id} was already settled")
        return current
    _release(session, row.account_id, row.user_id if row.from_allocation else None, row.amount, now=utc(now))
    return _hold_view(row)


def expire(session: Session, hold: int | str, *, now: datetime) -> HoldView:
    """Release a pending hold past its TTL (the sweeper then reconciles with Twilio); otherwise a no-op."""
    now = utc(now)
    row = _resolve(session, hold, "pending", dict(status="expired", resolved_at=now), holds.c.expires_at <= now)
    if row is None:
        return _existing_hold(session, hold)
    _release(session, row.account_id, row.user_id if row.from_allocation else None, row.amount, now=now)
    return _hold_view(row)


def renew(session: Session | Connection, hold_id: int, *, expires_at: datetime) -> bool:
    """Keep a pending hold at least until `expires_at`; False when it is no longer pending.

    A campaign's holds are reserved when its chunk is made: a send claimed long after (a throttled sender)
    renews its hold, so the sweeper does not take the text on its way to Twilio for one left unsent.
    """
    until = utc(expires_at)
    return _sql(session).execute(
        update(holds).where(holds.c.id == hold_id, holds.c.status == "pending")
        .values(expires_at=case((holds.c.expires_at < until, until), else_=holds.c.expires_at))
        .returning(holds.c.id)).first() is not None


def due_holds(session: Session, now: datetime, *, limit: int = 500) -> list[int]:
    """Ids of pending holds past their TTL, oldest first, for the sweeper (from the index of unresolved holds)."""
    return list(_sql(session).scalars(
        select(holds.c.id).where(holds.c.resolved_at.is_(None), holds.c.status == "pending",
                                 holds.c.expires_at <= utc(now))
        .order_by(holds.c.expires_at, holds.c.id).limit(limit)
    ))


def get_hold(session: Session, hold: int | str) -> HoldView:
    return _existing_hold(session, hold)


# --- lots ------------------------------------------------------------------------------------------

def grant(session: Session, account_id: str, amount_mc: int, kind: str, *, granted_at: datetime,
          expires_at: datetime | None | _DefaultExpiry = DEFAULT_EXPIRY, user_id: str | None = None,
          priority: int | None = None, reference: str | None = None, idempotency_key: str) -> LotView:
    """Add a lot (into the pool, or a role-`user` user's own credits) and a `grant`/`purchase` entry.

    A pool or user in debt is repaid first (the lot keeps only what is left); a `locked` account whose pool
    is back to >= 0 is unlocked. `credit_hold` refuses plan credits (Conflict). Replays return the lot.
    """
    _require(amount_mc > 0, "credits", "must be more than zero")
    _require(kind in KINDS, "kind", f"must be one of {', '.join(KINDS)}")
    account = _lock_account(session, account_id)
    if (existing := _sql(session).execute(select(lots).where(lots.c.idempotency_key == idempotency_key)).first()):
        return _lot_view(existing)
    account = _lapse_due(session, account, utc(granted_at))
    if kind == "plan" and account.credit_hold:
        raise Conflict(f"account {account_id} has a credit hold: no new plan credits")
    granted_at = utc(granted_at)
    if isinstance(expires_at, _DefaultExpiry):
        expires_at = default_expiry(kind, granted_at, account.timezone, account.plan_cycle,
                                    utc(account.cycle_anchor_at))
    elif expires_at is not None:
        expires_at = utc(expires_at)
        _require(expires_at > granted_at, "expires_at", "must be after granted_at")
    wallet = None
    if user_id is not None:
        wallet = _wallet_of(session, account_id, user_id)
        _require(wallet is not None, "user_id", "owners and admins share the pool: grant to the pool instead")
    pool = account.balance - account.allocated
    debt = -_user_balance(session, wallet) if wallet else -pool
    repaid = min(amount_mc, max(0, debt))
    unlocks = account.status == "locked" and pool + (0 if wallet else amount_mc) >= 0
    lot_values = dict(account_id=account_id, user_id=wallet, kind=kind, amount=amount_mc,
                      remaining=amount_mc - repaid, priority=DEFAULT_PRIORITY[kind] if priority is None else priority,
                      granted_at=granted_at, expires_at=expires_at, reference=reference,
                      idempotency_key=idempotency_key)
    lot_id = _sql(session).execute(insert(lots).values(**lot_values).returning(lots.c.id)).scalar_one()
    balance = _apply(session, account_id, amount_mc, wallet, unlock=unlocks)
    if unlocks:
        account_unlocked(session, account_id, balance=balance, now=granted_at)
    if lot_values["remaining"] and expires_at is not None:
        refresh_next_expiry(session, account_id)
    _write(session, [dict(account_id=account_id, user_id=wallet, at=granted_at,
                          kind="purchase" if kind == "purchase" else "grant", amount=amount_mc,
                          balance_after=balance, reference=reference, hold_id=None,
                          idempotency_key=idempotency_key, memo=f"{kind} lot {lot_id}")])
    return LotView(id=lot_id, **{k: v for k, v in lot_values.items() if k != "idempotency_key"})


def expire_lots(session: Session, account_id: str, *, now: datetime) -> int:
    """Write the expiry of every lot past its `expires_at` (plan and rollover lots stay while
    `rollover_protection` is set), less what pending holds still need; returns mc expired.

    Every ledger operation does this first when it is due; this is for callers that only want it done.
    """
    now = utc(now)
    account = _lock_account(session, account_id)
    return account.balance - _lapse_due(session, account, now).balance


def lapsed(session: Session, account_id: str, *, now: datetime) -> dict[str | None, int]:
    """Read-only: mc per wallet (None: the pool) that has expired by `now` but is not written off yet.

    Reads subtract it, so a balance, an estimate's pre-check or a report never counts an expired lot,
    whether or not an operation has written the expiry since. Empty when nothing is due.
    """
    account = _sql(session).execute(select(accounts.c.next_expiry_at, accounts.c.rollover_protection)
                                    .where(accounts.c.id == account_id)).first()
    if account is None or not _due(account.next_expiry_at, utc(now)):
        return {}
    totals: dict[str | None, int] = {}
    for lot, amount in _lapsing(session, account_id, account.rollover_protection, utc(now)):
        totals[lot.user_id] = totals.get(lot.user_id, 0) + amount
    return totals


def remove_never_expiring(session: Session, account_id: str, *, now: datetime) -> int:
    """Spam: the credits that would never expire (purchased and bonus) are taken back, each lot with an
    `adjustment` entry; returns mc removed.

    What pending holds took from them stays for those holds, so a message already with Twilio is paid once, from
    the credits held for it, never again as debt; that part expires now, so what the holds leave lapses when
    they settle or are voided (expiry at spend time).
    """
    now = utc(now)
    account = _lapse_due(session, _lock_account(session, account_id), now)
    rows = _open_lots(session, account_id)  # in burn order as it was when the holds were taken
    as_if_expired = [SimpleNamespace(**{**row._asdict(), "expires_at": now}) if row.kind in NEVER_EXPIRING_KINDS
                     else row for row in rows]
    pieces = [(lot, amount) for lot, amount in lapsing(as_if_expired, _pending_holds(session, account_id), now,
                                                         protected=account.rollover_protection)
              if lot.kind in NEVER_EXPIRING_KINDS]
    gone = {lot.id: amount for lot, amount in pieces}
    kept = [row.id for row in rows if row.kind in NEVER_EXPIRING_KINDS and row.remaining > gone.get(row.id, 0)]
    if kept:
        _sql(session).execute(update(lots).where(lots.c.id.in_(kept)).values(expires_at=now))
        refresh_next_expiry(session, account_id)
    return _write_off(session, account_id, pieces, kind="adjustment", entry=lambda lot, left: dict(
        at=now, idempotency_key=f"spam:lot:{lot.id}",
        memo=f"never-expiring credits removed: account flagged as spam: {lot.kind} lot {lot.id}"))


def expire_now(session: Session, account_id: str, *, kinds: tuple[str, ...], now: datetime) -> int:
    """Bring the expiry of the account's open lots of `kinds` forward to `now` and write what lapses (account
    canceled); returns mc expired.

    It is expiry like any other (`_lapse_due`): what pending holds took before now stays for them, so a
    message already with Twilio is still paid for, and what they leave lapses when they settle or are voided.
    """
    now = utc(now)
    _lock_account(session, account_id)
    _sql(session).execute(update(lots).where(
        lots.c.account_id == account_id, lots.c.kind.in_(kinds), lots.c.remaining > 0,
        or_(lots.c.expires_at.is_(None), lots.c.expires_at > now)).values(expires_at=now))
    refresh_next_expiry(session, account_id)
    return expire_lots(session, account_id, now=now)


def charge_pool(session: Session, account_id: str, amount_mc: int, *, kind: str, reference: str | None = None,
                idempotency_key: str, now: datetime) -> int:
    """Take credits from the pool without a hold (month-end fees such as phone numbers); returns the balance.

    Burns pool lots in burn order and may leave the pool below zero, which locks a prepaid account
    exactly as a settlement does. Replaying the key changes nothing.
    """
    _require(amount_mc > 0, "amount", "must be more than zero")
    now = utc(now)
    account = _lock_account(session, account_id)
    if _sql(session).execute(select(entries.c.id).where(entries.c.idempotency_key == idempotency_key)).first():
        return account.balance
    _lapse_due(session, account, now)
    goes_negative = and_(accounts.c.status == "active", accounts.c.overdraft_policy == "prepaid",
                         accounts.c.balance - accounts.c.allocated - amount_mc < 0)
    balance, status = _sql(session).execute(update(accounts).where(accounts.c.id == account_id).values(
        balance=accounts.c.balance - amount_mc,
        status=case((goes_negative, "locked"), else_=accounts.c.status),
        status_reason=case((goes_negative, LOCK_REASON), else_=accounts.c.status_reason),
    ).returning(accounts.c.balance, accounts.c.status)).one()
    if status == "locked":
        account_locked(session, account_id, reason=LOCK_REASON, balance=balance, now=now)
    _burn(session, account_id, None, amount_mc)
    _write(session, [dict(account_id=account_id, user_id=None, at=now, kind=kind, amount=-amount_mc,
                          balance_after=balance, reference=reference, hold_id=None,
                          idempotency_key=idempotency_key, memo=None)])
    return balance


def reset_debt(session: Session, account_id: str, *, reference: str | None = None, idempotency_key: str,
               now: datetime) -> int:
    """Bring a pool below zero back to zero because the debt was billed: one `reset` entry; returns mc reset."""
    account = _lock_account(session, account_id)
    if (first := _sql(session).execute(select(entries.c.amount).where(entries.c.idempotency_key == idempotency_key))
            .first()) is not None:
        return first.amount
    account = _lapse_due(session, account, utc(now))
    debt = max(0, account.allocated - account.balance)
    if not debt:
        return 0
    balance = _apply(session, account_id, debt, None, unlock=account.status == "locked")
    if account.status == "locked":
        account_unlocked(session, account_id, balance=balance, now=utc(now))
    _write(session, [dict(account_id=account_id, user_id=None, at=utc(now), kind="reset", amount=debt,
                          balance_after=balance, reference=reference, hold_id=None,
                          idempotency_key=idempotency_key, memo="negative balance billed and reset to zero")])
    return debt


def transfer(session: Session, account_id: str, user_id: str, amount_mc: int, *, now: datetime,
             idempotency_key: str) -> None:
    """Move credits between the pool and a user's own credits (positive: to the user; negative: back).

    The moved pieces keep their lot's kind, expiry and priority; what a side in debt receives repays it
    first (no lot). Two `allocation` entries (pool side, user side) leave the balance unchanged. Callers
    check the limits first; this only refuses what would break the ledger (InsufficientCredits).
    """
    if amount_mc == 0:
        return
    now = utc(now)
    account = _lock_account(session, account_id)
    if _sql(session).execute(select(entries.c.id).where(entries.c.idempotency_key == f"{idempotency_key}:pool")).first():
        return
    account = _lapse_due(session, account, now)
    user = _sql(session).execute(select(users).where(users.c.id == user_id, users.c.account_id == account_id)).first()
    if user is None:
        raise NotFound(f"No user {user_id} in account {account_id}.")
    pool = account.balance - account.allocated
    if amount_mc > 0:
        room = pool - (account.held - account.allocated_held)
        if amount_mc > room:
            raise InsufficientCredits(f"the pool has {room} mc available", available=max(room, 0), required=amount_mc)
        pieces = _take(session, account_id, None, amount_mc, now=now, protected=account.rollover_protection)
        destination, repay = user_id, max(0, -user.balance)
    else:
        if -amount_mc > user.balance - user.held:
            raise InsufficientCredits(f"the user has {user.balance - user.held} mc available",
                                      available=user.balance - user.held, required=-amount_mc)
        pieces = _take(session, account_id, user_id, -amount_mc, now=now, protected=account.rollover_protection)
        destination, repay = None, max(0, -pool)
    new_lots = []
    for lot, taken in pieces:
        kept = taken - min(taken, repay)
        repay -= taken - kept
        if kept:
            new_lots.append(dict(account_id=account_id, user_id=destination, kind=lot.kind, amount=kept, remaining=kept,
                                 priority=lot.priority, granted_at=lot.granted_at, expires_at=lot.expires_at,
                                 reference=lot.reference, idempotency_key=f"{idempotency_key}:lot:{lot.id}"))
    if new_lots:
        _sql(session).execute(insert(lots), new_lots)
    _sql(session).execute(update(users).where(users.c.id == user_id).values(balance=users.c.balance + amount_mc))
    _sql(session).execute(update(accounts).where(accounts.c.id == account_id)
                    .values(allocated=accounts.c.allocated + amount_mc))
    common = dict(account_id=account_id, at=now, kind="allocation", reference=None, hold_id=None,
                  memo=f"allocation to user {user_id}" if amount_mc > 0 else f"returned by user {user_id}")
    _write(session, [dict(common, user_id=None, amount=-amount_mc, balance_after=account.balance - amount_mc,
                          idempotency_key=f"{idempotency_key}:pool"),
                     dict(common, user_id=user_id, amount=amount_mc, balance_after=account.balance,
                          idempotency_key=f"{idempotency_key}:user")])


# --- reads -----------------------------------------------------------------------------------------

def balance(session: Session, account_id: str, *, now: datetime) -> BalanceView:
    """The account's credits as they stand at `now`: expired lots are not counted, written off yet or not."""
    now = utc(now)
    account = _sql(session).execute(select(accounts).where(accounts.c.id == account_id)).first()
    if account is None:
        raise NotFound(f"No account {account_id}.")
    rows = _open_lots(session, account_id)
    gone: dict[int, int] = {}
    if _due(account.next_expiry_at, now):
        pending = _pending_holds(session, account_id)
        gone = {lot.id: amount for lot, amount in lapsing(rows, pending, now, protected=account.rollover_protection)}
    open_lots = [replace(_lot_view(row), remaining=row.remaining - gone.get(row.id, 0))
                 for row in rows if row.remaining > gone.get(row.id, 0)]
    gone_from: dict[str | None, int] = {}
    for row in rows:
        gone_from[row.user_id] = gone_from.get(row.user_id, 0) + gone.get(row.id, 0)
    month_end = end_of_month(now, account.timezone)
    expiring = sum(lot.remaining for lot in open_lots
                   if can_lapse(lot, account.rollover_protection) and now < lot.expires_at <= month_end)
    seats = [UserCredits(id=row.id, name=row.name, role=row.role, monthly_credits=row.monthly_credits,
                         balance=row.balance - gone_from.get(row.id, 0), held=row.held)
             for row in _sql(session).execute(select(users).where(users.c.account_id == account_id,
                                                            users.c.deleted_at.is_(None)).order_by(users.c.id))]
    return BalanceView(account_id=account_id, status=account.status, balance=account.balance - sum(gone.values()),
                       held=account.held,
                       pool_available=account.balance - account.allocated - account.held + account.allocated_held
                       - gone_from.get(None, 0),
                       expiring_end_of_month=expiring, lots=open_lots, users=seats)


def available_for(session: Session, account_id: str, user_id: str | None = None, *, now: datetime) -> int | None:
    """What a hold for this sender could take at `now`: one read (two when a lot has just expired), for
    intake's quick pre-check.

    None means no limit (postpaid pool). Raises NotFound, or AccountLocked when holds are refused.
    """
    account = _sql(session).execute(
        select(accounts.c.status, accounts.c.status_reason, accounts.c.overdraft_policy, accounts.c.next_expiry_at,
               accounts.c.overdraft_limit, POOL_AVAILABLE.label("pool"),
               select(users.c.role).where(users.c.id == user_id, users.c.account_id == account_id,
                                            users.c.deleted_at.is_(None)).scalar_subquery().label("role"),
               select(users.c.balance - users.c.held).where(users.c.id == user_id).scalar_subquery().label("own"),
               select(users.c.balance).where(users.c.id == user_id).scalar_subquery().label("own_balance"))
        .where(accounts.c.id == account_id)
    ).first()
    if account is None:
        raise NotFound(f"No account {account_id}.")
    if user_id is not None and account.role is None and account.status == "active":
        raise NotFound(f"No user {user_id} in account {account_id}.")
    return holdable(session, account_id, account, user_id=user_id, now=now)


def holdable(session: Session, account_id: str, facts, *, user_id: str | None, now: datetime) -> int | None:
    """What a hold could take, from an account's status, policy, limit, `pool`, `next_expiry_at` and the
    sender's `role`, `own` (available) and `own_balance` (credits that expired and are not written off yet
    are left out).

    None means no limit (postpaid pool). Raises AccountLocked when holds are refused: the account is not
    active, or the sender is a role-`user` user whose own credits are below zero.
    """
    if facts.status != "active":
        raise AccountLocked(f"account {account_id} is {facts.status}: {facts.status_reason or 'no reason given'}")
    if facts.role != "user" and facts.overdraft_policy == "postpaid":
        return None
    gone = lapsed(session, account_id, now=now) if _due(facts.next_expiry_at, utc(now)) else {}
    if facts.role == "user":
        if facts.own_balance < 0:
            raise AccountLocked(f"user {user_id} is locked: {USER_LOCK_REASON}")
        return facts.own - gone.get(user_id, 0)
    return facts.pool - gone.get(None, 0) + facts.overdraft_limit


def transactions(session: Session, account_id: str, *, limit: int, before_id: int | None = None,
                 user_id: str | None = None, kind: str | None = None, reference_prefix: str | None = None,
                 at_from: datetime | None = None, at_before: datetime | None = None) -> list[Row]:
    """Entries newest first (only `user_id`'s, of `kind`, whose reference starts with `reference_prefix`, written in
    [at_from, at_before), if given); page on with the last id returned as `before_id`."""
    query = select(entries).where(entries.c.account_id == account_id)
    if user_id is not None:
        query = query.where(entries.c.user_id == user_id)
    if kind is not None:
        query = query.where(entries.c.kind == kind)
    if reference_prefix is not None:
        query = query.where(entries.c.reference.startswith(reference_prefix, autoescape=True))
    if at_from is not None:
        query = query.where(entries.c.at >= at_from)
    if at_before is not None:
        query = query.where(entries.c.at < at_before)
    if before_id is not None:
        query = query.where(entries.c.id < before_id)
    return list(_sql(session).execute(query.order_by(entries.c.id.desc()).limit(limit)))


def lock_account(session: Session, account_id: str) -> Row:
    """Take the account's row lock (the first lock of any credit change); NotFound if there is none."""
    return _lock_account(session, account_id)


def lock_accounts(session: Session, account_ids: list[str]) -> None:
    """Take several accounts' row locks in id order, so two writers locking overlapping sets cannot deadlock;
    NotFound if one is missing."""
    ids = sorted(set(account_ids))
    found = _sql(session).scalars(select(accounts.c.id).where(any_of(session, accounts.c.id, ids))
                                  .order_by(accounts.c.id).with_for_update()).all()
    if len(found) < len(ids):
        raise NotFound(f"No account {sorted(set(ids) - set(found))[0]}.")


# --- internals -------------------------------------------------------------------------------------

def _require(condition: bool, field: str, reason: str) -> None:
    if not condition:
        raise ValidationFailed(f"{field} {reason}", errors={field: reason})


def _on_postgres(session: Session | Connection) -> bool:
    """PostgreSQL runs reserve and settle as the functions of ledger_pg (same effects, one round trip)."""
    return dialect_name(session) == "postgresql"


def _new_hold_ids(session: Session, count: int) -> list[int]:
    """Ids for holds inserted by COPY: from the table's own sequence on PostgreSQL, after the largest on SQLite
    (whose write lock the caller holds)."""
    if not count:
        return []
    if _on_postgres(session):
        return list(_sql(session).scalars(
            select(func.nextval(func.pg_get_serial_sequence("holds", "id"))).select_from(func.generate_series(1, count))))
    last = _sql(session).scalar(select(func.coalesce(func.max(holds.c.id), 0)))
    return list(range(last + 1, last + 1 + count))


def _function_hold(session: Session | Connection, row, account_id: str, user_id: str | None,
                   amount_mc: int) -> HoldView:
    """ledger_reserve's answer as reserve's: the hold, or the domain error."""
    if row.outcome == "no_user":
        raise NotFound(f"No user {user_id} in account {account_id}.")
    if row.outcome == "refused":
        wallet = _wallet_of(session, account_id, user_id) if user_id is not None else None
        raise _refusal(session, account_id, wallet, amount_mc)
    return _hold_view(row)


def _function_settlement(session: Session | Connection, row, request: SettleRequest, now: datetime) -> Settlement:
    """ledger_settle's answer as settle's. What the hold did not use of an expired lot lapses now: after a lone
    call, in a transaction of its own (the settlement is committed; were this lost, the next gate writes it)."""
    if row.outcome == "replay":
        return _settlement_replay(session, request.hold, request.idempotency_key)
    if _due(row.next_expiry_at, now):
        with _atomic(_sql(session)):
            _lapse_due(session, _lock_account(session, row.account_id), now)
    return Settlement(hold=_hold_view(row), charged=request.actual_mc + request.carrier_fee_mc,
                      balance=row.new_balance, status=row.account_status)


# ledger_reserve's call with a statement of the caller's after it (reserve's `then`): PostgreSQL runs a
# data-modifying WITH to its end, whether or not the query reads it.
_RESERVE_THEN_SQL = ("WITH reserved AS MATERIALIZED ({reserve}),"
                     " held AS (SELECT * FROM reserved WHERE outcome IN ('held', 'replay')),"
                     " then_ AS ({then}) SELECT * FROM reserved")
_RESERVE_THEN = _RESERVE_THEN_SQL.replace("{reserve}", PG_RESERVE)
# ledger_settle's calls with the caller's statement after them (settle_many's `then`), which reads those that settled.
_SETTLE_THEN = ("WITH settling AS MATERIALIZED ({call}),"
                " settled AS (SELECT * FROM settling WHERE outcome = 'settled'),"
                " then_ AS ({then}) SELECT * FROM settling ORDER BY position")


def _batch_json(rows: list[dict]) -> str:
    """A batch's arguments as the one JSON parameter of RESERVE_EACH and SETTLE_MANY: psycopg adapts a list to an
    array in Python, six of them cost the client about 30 µs a batch of five, orjson writes the batch in one."""
    return orjson.dumps(rows).decode()


def _call_function(connection: Connection, call: str, parameters: tuple) -> tuple:
    """The one row a ledger function answers, read from the driver's own cursor as a named tuple: SQLAlchemy's
    result layer (its CursorResult, metadata and Row) cost as much client CPU as the rest of the call. Prepared
    on the server from its first use on a connection."""
    with prepared(connection, call, parameters) as cursor:
        return cursor.fetchone()


@contextmanager
def _atomic(connection: Connection) -> Iterator[None]:
    """Several statements as one transaction (PostgreSQL). In a unit of work they are already; on the
    autocommit connection of `Database.one_statement()`, psycopg's transaction() wraps them in BEGIN/COMMIT."""
    driver = connection.connection.driver_connection
    if not driver.autocommit:
        yield
        return
    with driver.transaction():
        yield


def _lock_account(session: Session, account_id: str) -> Row:
    account = _sql(session).execute(select(accounts).where(accounts.c.id == account_id).with_for_update()).first()
    if account is None:
        raise NotFound(f"No account {account_id}.")
    return account


def _wallet_of(session: Session, account_id: str, user_id: str) -> str | None:
    """The user whose own credits a send draws on: the user for role `user`, None (the pool) for owners/admins."""
    role = _sql(session).scalar(select(users.c.role).where(users.c.id == user_id, users.c.account_id == account_id,
                                                     users.c.deleted_at.is_(None)))
    if role is None:
        raise NotFound(f"No user {user_id} in account {account_id}.")
    return user_id if role == "user" else None


def _user_balance(session: Session, user_id: str) -> int:
    return _sql(session).scalar(select(users.c.balance).where(users.c.id == user_id))


def _claim(session: Session, account_id: str, wallet: str | None, amount: int, *, gate: datetime | None) -> bool:
    """Add to `held` if the hold fits; the account row stays locked until the caller's transaction ends.

    With `gate`, it also refuses while an expiry is due at that instant (the caller writes it, then claims
    again without the gate).
    """
    active = and_(accounts.c.id == account_id, accounts.c.status == "active")
    if gate is not None:
        active = and_(active, or_(accounts.c.next_expiry_at.is_(None), accounts.c.next_expiry_at > gate))
    if wallet is None:
        fits = or_(accounts.c.overdraft_policy == "postpaid", POOL_AVAILABLE - amount >= -accounts.c.overdraft_limit)
        return _sql(session).execute(update(accounts).where(active, fits).values(held=accounts.c.held + amount)
                               .returning(accounts.c.id)).first() is not None
    if _sql(session).execute(update(accounts).where(active).values(held=accounts.c.held + amount,
                                                             allocated_held=accounts.c.allocated_held + amount)
                       .returning(accounts.c.id)).first() is None:
        return False
    if _sql(session).execute(update(users).where(users.c.id == wallet, users.c.balance - users.c.held >= amount)
                       .values(held=users.c.held + amount).returning(users.c.id)).first() is not None:
        return True
    _sql(session).execute(update(accounts).where(accounts.c.id == account_id)
                    .values(held=accounts.c.held - amount, allocated_held=accounts.c.allocated_held - amount))
    return False


def _release(session: Session, account_id: str, wallet: str | None, amount: int, *, now: datetime) -> None:
    """Give a hold's credits back; what of them an expired lot held lapses now."""
    next_expiry_at = _sql(session).execute(update(accounts).where(accounts.c.id == account_id).values(
        held=accounts.c.held - amount,
        allocated_held=accounts.c.allocated_held - (amount if wallet is not None else 0),
    ).returning(accounts.c.next_expiry_at)).scalar_one()
    if wallet is not None:
        _sql(session).execute(update(users).where(users.c.id == wallet).values(held=users.c.held - amount))
    if _due(next_expiry_at, now):
        _lapse_due(session, _lock_account(session, account_id), now)


def _due(next_expiry_at: datetime | None, now: datetime) -> bool:
    return next_expiry_at is not None and utc(next_expiry_at) <= now


def _expiry_due(session: Session, account_id: str, now: datetime) -> bool:
    return _due(_sql(session).scalar(select(accounts.c.next_expiry_at).where(accounts.c.id == account_id)), now)


def _pending_holds(session: Session, account_id: str) -> list[PendingHold]:
    return [PendingHold(wallet=row.user_id if row.from_allocation else None, created_at=row.created_at,
                        amount=row.amount)
            for row in _sql(session).execute(
                select(holds.c.user_id, holds.c.from_allocation, holds.c.created_at, holds.c.amount)
                .where(holds.c.account_id == account_id, holds.c.status == "pending"))]


def _open_lots(session: Session, account_id: str) -> list[Row]:
    """The account's lots with credits left (pool and users'), in burn order."""
    return list(_sql(session).execute(
        select(lots).where(lots.c.account_id == account_id, lots.c.remaining > 0).order_by(*burn_order_sql())))


def _lapsing(session: Session, account_id: str, protected: bool, now: datetime) -> list[tuple[Row, int]]:
    return lapsing(_open_lots(session, account_id), _pending_holds(session, account_id), now, protected=protected)


def _lapse_due(session: Session, account: Row, now: datetime) -> Row:
    """Write off what expired by `now` (the caller holds the account lock): one `expiry` entry per lot, dated
    its `expires_at`, and the next expiry set; returns the account row as it is after. A no-op when none is due.
    """
    if not _due(account.next_expiry_at, now):
        return account
    rows = _open_lots(session, account.id)
    pieces = lapsing(rows, _pending_holds(session, account.id), now, protected=account.rollover_protection)
    _write_off(session, account.id, sorted(pieces, key=lambda piece: (utc(piece[0].expires_at), piece[0].id)),
               kind="expiry", entry=lambda lot, left: dict(
                   at=utc(lot.expires_at), idempotency_key=f"expiry:lot:{lot.id}:{left}",
                   memo=f"expired: {lot.kind} lot {lot.id}"))
    gone = {lot.id: amount for lot, amount in pieces}
    return _sql(session).execute(update(accounts).where(accounts.c.id == account.id).values(
        next_expiry_at=next_expiry(((row, row.remaining - gone.get(row.id, 0)) for row in rows),
                                   account.rollover_protection),
    ).returning(*accounts.c)).one()


def _lapse_before_settling(session: Session, hold: int | str, now: datetime) -> None:
    """Before a settlement burns lots: write what expired, in lock order (the hold, then its account)."""
    current = _sql(session).execute(select(holds.c.account_id, holds.c.status).where(_hold_ref(hold))
                                    .with_for_update()).first()
    if current is not None and current.status in ("pending", "expired"):
        _lapse_due(session, _lock_account(session, current.account_id), now)


def refresh_next_expiry(session: Session, account_id: str) -> None:
    """Set `next_expiry_at` from the lots as they are: after a grant, or when rollover protection changes
    (the caller then runs expire_lots, so credits it no longer keeps lapse at once)."""
    protected = and_(lots.c.kind.in_(PROTECTED_KINDS), accounts.c.rollover_protection)
    soonest = (select(func.min(lots.c.expires_at))
               .where(lots.c.account_id == accounts.c.id, lots.c.remaining > 0, lots.c.expires_at.is_not(None),
                      ~protected).scalar_subquery())
    _sql(session).execute(update(accounts).where(accounts.c.id == account_id).values(next_expiry_at=soonest))


def _refusal(session: Session, account_id: str, wallet: str | None, amount: int) -> Exception:
    account = _sql(session).execute(select(accounts, POOL_AVAILABLE.label("pool")).where(accounts.c.id == account_id)).first()
    if account is None:
        return NotFound(f"No account {account_id}.")
    if account.status != "active":
        return AccountLocked(f"account {account_id} is {account.status}: {account.status_reason or 'no reason given'}")
    if wallet is not None:
        user = _sql(session).execute(select(users.c.balance, users.c.held).where(users.c.id == wallet)).one()
        if user.balance < 0:
            return AccountLocked(f"user {wallet} is locked: {USER_LOCK_REASON}")
        available = user.balance - user.held
        owner = f"user {wallet}"
    else:
        available = account.pool + account.overdraft_limit
        owner = f"account {account_id}"
    return InsufficientCredits(f"{owner} has {max(available, 0)} mc available, {amount} mc required",
                               available=max(available, 0), required=amount)


def _resolve(session: Session, hold: int | str, from_status: str, values: dict, *conditions) -> Row | None:
    """Move a hold out of `from_status` exactly once; None when it was not in that status."""
    return _sql(session).execute(update(holds).where(_hold_ref(hold), holds.c.status == from_status, *conditions)
                           .values(**values).returning(*holds.c)).first()


def _hold_ref(hold: int | str):
    return holds.c.id == hold if isinstance(hold, int) else holds.c.idempotency_key == hold


def _hold_where(session: Session, condition) -> HoldView | None:
    row = _sql(session).execute(select(holds).where(condition)).first()
    return None if row is None else _hold_view(row)


def _existing_hold(session: Session, hold: int | str) -> HoldView:
    if (view := _hold_where(session, _hold_ref(hold))) is None:
        raise NotFound(f"No hold {hold}.")
    return view


def _hold_view(row: Row) -> HoldView:
    return HoldView(id=row.id, account_id=row.account_id, user_id=row.user_id, amount=row.amount,
                    from_allocation=row.from_allocation, status=row.status, reference=row.reference,
                    idempotency_key=row.idempotency_key, expires_at=utc(row.expires_at),
                    settled_amount=row.settled_amount)


def _settlement_replay(session: Session, hold: int | str, idempotency_key: str) -> Settlement:
    current = _existing_hold(session, hold)
    first = _sql(session).execute(select(entries).where(entries.c.idempotency_key == idempotency_key)).first()
    if current.status != "settled" or first is None or first.hold_id != current.id:
        raise Conflict(f"hold {current.id} is {current.status}; it cannot be settled under key {idempotency_key!r}")
    # the settlement's last line, by its unique keys: entries has no index on hold_id
    last = _sql(session).execute(
        select(entries.c.balance_after)
        .where(entries.c.idempotency_key.in_((idempotency_key, f"{idempotency_key}:carrier_fee")))
        .order_by(entries.c.id.desc()).limit(1)).scalar_one()
    status = _sql(session).scalar(select(accounts.c.status).where(accounts.c.id == current.account_id))
    return Settlement(hold=current, charged=current.settled_amount, balance=last, status=status, replayed=True)


def _burn(session: Session, account_id: str, wallet: str | None, amount: int) -> None:
    """Take `amount` from the wallet's lots in burn order, in one UPDATE; lots stop at zero.

    Each lot keeps max(0, running_total - amount), where running_total sums it and every lot
    burned before it. The caller holds the account lock, so the totals cannot move underneath.
    """
    ordered = (select(lots.c.id, lots.c.remaining,
                      func.sum(lots.c.remaining).over(order_by=burn_order_sql()).label("running"))
               .where(lots.c.account_id == account_id, _wallet_lots(wallet), lots.c.remaining > 0)
               .subquery())
    _sql(session).execute(update(lots).where(lots.c.id == ordered.c.id, ordered.c.running - ordered.c.remaining < amount)
                    .values(remaining=case((ordered.c.running <= amount, 0), else_=ordered.c.running - amount)))


def _take(session: Session, account_id: str, wallet: str | None, amount: int, *, now: datetime,
          protected: bool) -> list[tuple[Row, int]]:
    """Like _burn, but returns each (lot, taken) piece, for moves that re-create the pieces elsewhere.

    A lot past its expiry is left where it is: what is left of it (after _lapse_due) belongs to the pending
    holds that took it before it expired, and moved it would only lapse in the other wallet.
    """
    pieces = []
    for lot in _sql(session).execute(select(lots).where(lots.c.account_id == account_id, _wallet_lots(wallet),
                                                  lots.c.remaining > 0).order_by(*burn_order_sql())):
        if amount == 0:
            break
        if can_lapse(lot, protected) and utc(lot.expires_at) <= now:
            continue
        taken = min(amount, lot.remaining)
        pieces.append((lot, taken))
        amount -= taken
    if amount:
        raise InsufficientCredits("the lots do not hold the credits to move", available=0, required=amount)
    _sql(session).execute(update(lots).where(lots.c.id == bindparam("lot_id"))
                    .values(remaining=lots.c.remaining - bindparam("taken")),
                    [{"lot_id": lot.id, "taken": taken} for lot, taken in pieces])
    return pieces


def _write_off(session: Session, account_id: str, pieces: list[tuple[Row, int]], *, kind: str,
               entry: Callable[[Row, int], dict]) -> int:
    """Take each (lot, mc) piece off its lot, one `kind` entry each, in the pieces' order; the caller holds the
    account lock. `entry(lot, left)` gives the entry's `at`, `idempotency_key` and `memo` (`left`: what the lot
    keeps). Returns mc written off."""
    if not pieces:
        return 0
    _sql(session).execute(update(lots).where(lots.c.id == bindparam("lot_id"))
                          .values(remaining=lots.c.remaining - bindparam("gone")),
                          [{"lot_id": lot.id, "gone": amount} for lot, amount in pieces])
    total = sum(amount for _, amount in pieces)
    by_user: dict[str, int] = {}
    for lot, amount in pieces:
        if lot.user_id is not None:
            by_user[lot.user_id] = by_user.get(lot.user_id, 0) + amount
    for user_id, amount in by_user.items():
        _sql(session).execute(update(users).where(users.c.id == user_id).values(balance=users.c.balance - amount))
    balance = _sql(session).execute(update(accounts).where(accounts.c.id == account_id).values(
        balance=accounts.c.balance - total, allocated=accounts.c.allocated - sum(by_user.values()),
    ).returning(accounts.c.balance)).scalar_one() + total
    lines = []
    for lot, amount in pieces:
        balance -= amount
        lines.append(dict(account_id=account_id, user_id=lot.user_id, kind=kind, amount=-amount,
                          balance_after=balance, reference=lot.reference, hold_id=None,
                          **entry(lot, lot.remaining - amount)))
    _write(session, lines)
    return total


def _apply(session: Session, account_id: str, amount: int, wallet: str | None, *, unlock: bool) -> int:
    """Add credits to the account's totals (and the user's); returns the new balance."""
    values = dict(balance=accounts.c.balance + amount)
    if wallet is not None:
        values["allocated"] = accounts.c.allocated + amount
        _sql(session).execute(update(users).where(users.c.id == wallet).values(balance=users.c.balance + amount))
    if unlock:
        values.update(status="active", status_reason=None)
    return _sql(session).execute(update(accounts).where(accounts.c.id == account_id).values(**values)
                           .returning(accounts.c.balance)).scalar_one()


def _write(session: Session, lines: list[dict]) -> None:
    _sql(session).execute(insert(entries), lines)


def _wallet_lots(wallet: str | None):
    return lots.c.user_id.is_(None) if wallet is None else lots.c.user_id == wallet


def _lot_view(row: Row) -> LotView:
    return LotView(id=row.id, account_id=row.account_id, user_id=row.user_id, kind=row.kind, amount=row.amount,
                   remaining=row.remaining, priority=row.priority, granted_at=utc(row.granted_at),
                   expires_at=None if row.expires_at is None else utc(row.expires_at), reference=row.reference)


def _sql(session: Session | Connection) -> Connection:
    """The session's connection (or the lone call's): Core statements skip the ORM's execution layer (a third of
    a round trip each)."""
    return session if isinstance(session, Connection) else session.connection()
