"""Month-end: what happens to an account's credits when one of its local months ends.

Closing a period, in one transaction under the account lock, at the instant the period ended:
1. expire lots due by then (plan credits of the ended cycle unless `rollover_protection`, rollover
   lots whose 12 months are up);
2. overdraft/postpaid accounts: reset a pool below zero to zero and open a `bill` for it;
3. charge the phone numbers' monthly credits (a `month_end_charge` entry);
4. when a cycle ends: apply a pending plan change, grant the next cycle's credits (none while
   `credit_hold`): `plan` lots, or `rollover` lots on a fifo_12m plan;
5. give each role-`user` user its monthly credits from the pool (as much as the pool holds).

A completed `close` row in billing_runs, written in the same transaction, makes the close happen
once per (account, period): a second run, a second scheduler or a retried message finds it and
changes nothing; each ledger call is keyed as well. A period is never closed before the account's
earlier ones: closing "through" a period first closes any it missed (catch-up after downtime).

Collecting a bill is a separate step because it talks to the payment gateway: it runs after the
close committed, keyed by (account, period), and a transient gateway error leaves it pending for a
retry. A declined bill starts dunning; the credits were already reset.
"""

import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, fields
from datetime import datetime

from sqlalchemy import Row, func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from . import dunning, ledger, purchases
from .calendar import Period, cycle_months, ends_cycle, period_end, period_of
from .db import Database
from .expiry import utc
from .models import Account, AutoRecharge, BillingRun, PhoneNumber, User
from .payments import PaymentGateway
from .price_list import default_price_list

accounts = Account.__table__
runs = BillingRun.__table__
users = User.__table__
numbers = PhoneNumber.__table__

BILLED_POLICIES = ("overdraft", "postpaid")
CENTS_PER_CREDIT = 1  # what a credit of negative balance is billed at


@dataclass
class Summary:
    """What a month-end did (or, in a dry run, would do). Amounts in millicredits."""

    period: str
    dry_run: bool = False
    accounts: int = 0  # accounts looked at
    closed: int = 0  # periods closed now (catch-up can close more than one per account)
    already_closed: int = 0
    not_ended: int = 0  # the period has not ended yet in the account's time zone
    failed: list[str] = field(default_factory=list)
    expired: int = 0
    billed: int = 0
    number_fees: int = 0
    granted: int = 0
    allocated: int = 0
    payments_succeeded: int = 0
    payments_declined: int = 0
    payments_pending: int = 0

    def add(self, other: "Summary") -> None:
        for f in fields(self):
            if f.name in ("period", "dry_run"):
                continue
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))

    def as_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}


def close_through(session: Session, account_id: str, through: Period, *, now: datetime) -> Summary:
    """Close every period of the account not yet closed, up to and including `through`, in order."""
    summary = Summary(str(through), accounts=1)
    account = ledger.lock_account(session, account_id)
    if period_end(through, account.timezone) > utc(now):
        summary.not_ended = 1
        return summary
    pending = _unclosed(session, account, through)
    if not pending:
        summary.already_closed = 1
    for period in pending:
        summary.add(_close(session, account_id, period, now=now))
    return summary


def close_accounts(database: Database, account_ids: list[str], through: Period, *, now: datetime,
                   dry_run: bool = False) -> Summary:
    """Close a batch in one transaction (fast path); if any account fails, each in its own, to isolate it."""
    summary = Summary(str(through), dry_run=dry_run)
    try:
        summary.add(_in_transaction(database, account_ids, through, now=now, dry_run=dry_run))
    except Exception:
        for account_id in account_ids:
            try:
                summary.add(_in_transaction(database, [account_id], through, now=now, dry_run=dry_run))
            except Exception:
                summary.accounts += 1
                summary.failed.append(account_id)
    return summary


def run(database: Database, gateway: PaymentGateway | None, period: Period, *, now: datetime,
        dry_run: bool = False, batch_size: int = 500,
        progress: Callable[[Summary], None] | None = None) -> Summary:
    """Month-end of `period` for every account, in id order, one transaction per batch; then collect bills.

    The same use case as the scheduler's; `progress` is told after each batch. A dry run writes
    nothing and charges nothing.
    """
    summary = Summary(str(period), dry_run=dry_run)
    for batch in account_batches(database, batch_size):
        done = close_accounts(database, batch, period, now=now, dry_run=dry_run)
        if not dry_run and gateway is not None and done.billed:
            done.add(collect_batch(database, gateway, batch, now=now))
        summary.add(done)
        if progress is not None:
            progress(done)
    return summary


def account_batches(database: Database, size: int) -> Iterator[list[str]]:
    """Every account id in id order, `size` at a time (keyset paging: never all in memory)."""
    after = ""
    while True:
        with database.unit_of_work() as session:
            batch = list(session.scalars(select(accounts.c.id).where(accounts.c.id > after)
                                         .order_by(accounts.c.id).limit(size)))
        if not batch:
            return
        yield batch
        after = batch[-1]


def count_accounts(database: Database) -> int:
    with database.unit_of_work() as session:
        return session.scalar(select(func.count()).select_from(accounts))


def due_accounts(session: Session, now: datetime, *, after: str = "", limit: int = 500) -> list[tuple[str, Period]]:
    """Accounts whose last ended local month is not closed yet, in id order, with that month."""
    due: list[tuple[str, Period]] = []
    for tz in session.scalars(select(accounts.c.timezone).distinct()):
        through = period_of(utc(now), tz).shift(-1)
        closed = select(runs.c.id).where(runs.c.account_id == accounts.c.id, runs.c.period == str(through),
                                         runs.c.step == "close")
        ids = session.scalars(select(accounts.c.id).where(accounts.c.timezone == tz, accounts.c.id > after,
                                                          accounts.c.created_at < period_end(through, tz),
                                                          ~closed.exists())
                              .order_by(accounts.c.id).limit(limit))
        due.extend((account_id, through) for account_id in ids)
    due.sort()
    return due[:limit]


def pending_bills(session: Session, *, limit: int = 500) -> list[tuple[str, str]]:
    """(account_id, period) of bills not collected yet."""
    return [tuple(row) for row in session.execute(
        select(runs.c.account_id, runs.c.period).where(runs.c.step == "bill", runs.c.status == "pending")
        .order_by(runs.c.id).limit(limit))]


def collect_bills(database: Database, gateway: PaymentGateway, account_id: str, *, now: datetime) -> Summary:
    """Charge the account's pending bills through the payments module, one payment per (account, period).

    The payment's key is `month-end:<account>:<period>:<card>`, so a crash or a second collector never
    charges twice (a new card on file makes a new payment); a gateway `error` leaves the bill pending and the next collection retries it (attempt + 1).
    A bill with no card on file, or declined, is left `declined` for dunning.
    """
    summary = Summary("")
    with database.unit_of_work() as session:
        bills = list(session.execute(select(runs).where(runs.c.account_id == account_id, runs.c.step == "bill",
                                                        runs.c.status == "pending").order_by(runs.c.period)))
        method = stored_payment_method(session, account_id) if bills else None
    for bill in bills:
        if method is None:
            _finish_bill(database, bill, "declined", "no_payment_method", now)
            summary.payments_declined += 1
            continue
        with database.unit_of_work() as session:
            payment = purchases.open_payment(
                session, account_id, source="month_end", idempotency_key=f"month-end:{account_id}:{bill.period}:{method}",
                credits_mc=0, amount_cents=bill.amount_cents, currency=default_price_list().currency,
                payment_method=method, now=utc(now))
            if payment.status == "error":
                purchases.retry(session, payment, now=utc(now))
            payment_id = payment.id
        payment = purchases.charge_payment(database, gateway, payment_id, now=utc(now))
        if payment.status in ("pending", "error"):
            summary.payments_pending += 1
            continue
        paid = payment.status == "succeeded"
        _finish_bill(database, bill, "paid" if paid else "declined", payment.id, now)
        summary.payments_succeeded += paid
        summary.payments_declined += not paid
    return summary


def collect_batch(database: Database, gateway: PaymentGateway, account_ids: list[str], *, now: datetime) -> Summary:
    """collect_bills for those of the accounts that have a pending bill."""
    with database.unit_of_work() as session:
        billed = list(session.scalars(select(runs.c.account_id).distinct().where(
            runs.c.account_id.in_(account_ids), runs.c.step == "bill", runs.c.status == "pending")))
    summary = Summary("")
    for account_id in sorted(billed):
        summary.add(collect_bills(database, gateway, account_id, now=now))
    return summary


def stored_payment_method(session: Session, account_id: str) -> str | None:
    """The card on file: the payment method saved with the account's auto-recharge settings."""
    return session.scalar(select(AutoRecharge.payment_method).where(AutoRecharge.account_id == account_id))


def bill_cents(amount_mc: int) -> int:
    """Credits of debt in cents, rounded up to a whole cent."""
    return math.ceil(amount_mc * CENTS_PER_CREDIT / 1000)


# --- internals -------------------------------------------------------------------------------------

class _Rollback(Exception):
    def __init__(self, summary: Summary):
        self.summary = summary


def _in_transaction(database: Database, account_ids: Iterable[str], through: Period, *, now: datetime,
                    dry_run: bool) -> Summary:
    summary = Summary(str(through), dry_run=dry_run)
    try:
        with database.unit_of_work() as session:
            for account_id in sorted(account_ids):  # lock in id order: concurrent batches cannot deadlock
                summary.add(close_through(session, account_id, through, now=now))
            if dry_run:
                raise _Rollback(summary)
    except _Rollback as rolled_back:
        return rolled_back.summary
    return summary


def _unclosed(session: Session, account: Row, through: Period) -> list[Period]:
    """The periods to close, oldest first: after the last closed one (or from the account's first month)."""
    last = session.scalar(select(func.max(runs.c.period)).where(runs.c.account_id == account.id,
                                                                runs.c.step == "close"))
    if last is not None:
        start = Period.parse(last).shift(1)
    else:
        start = min(period_of(utc(account.created_at), account.timezone), through)
    return [Period.from_index(i) for i in range(start.index, through.index + 1)]


def _close(session: Session, account_id: str, period: Period, *, now: datetime) -> Summary:
    summary = Summary(str(period), closed=1)
    account = ledger.lock_account(session, account_id)
    if not _claim(session, account_id, period, now):
        return Summary(str(period), already_closed=1)
    ended = period_end(period, account.timezone)
    key = f"month-end:{account_id}:{period}"
    summary.expired = ledger.expire_lots(session, account_id, now=ended)
    if account.overdraft_policy in BILLED_POLICIES:
        summary.billed = ledger.reset_debt(session, account_id, reference=f"bill:{period}",
                                           idempotency_key=f"{key}:reset", now=ended)
        if summary.billed:
            session.execute(_insert(session, runs).values(
                account_id=account_id, period=str(period), step="bill", status="pending", amount=summary.billed,
                amount_cents=bill_cents(summary.billed), created_at=utc(now)
            ).on_conflict_do_nothing())
    fees = session.scalar(select(func.coalesce(func.sum(numbers.c.monthly_cost), 0))
                          .where(numbers.c.account_id == account_id))
    if fees:
        ledger.charge_pool(session, account_id, fees, kind="month_end_charge", reference=f"numbers:{period}",
                           idempotency_key=f"{key}:numbers", now=ended)
        summary.number_fees = fees
    anchor = period_of(utc(account.created_at), account.timezone)
    if ends_cycle(period, anchor, account.plan_cycle):
        summary.granted = _grant_next_cycle(session, account, period, ended, key)
    summary.allocated = _allocate(session, account_id, ended, key)
    return summary


def _claim(session: Session, account_id: str, period: Period, now: datetime) -> bool:
    """Write the (account, period, close) row; False when it was already there (closed before)."""
    return session.execute(_insert(session, runs).values(
        account_id=account_id, period=str(period), step="close", status="completed", created_at=utc(now),
        completed_at=utc(now),
    ).on_conflict_do_nothing().returning(runs.c.id)).first() is not None


def _grant_next_cycle(session: Session, account: Row, period: Period, ended: datetime, key: str) -> int:
    monthly = account.plan_monthly_credits
    if account.next_plan_monthly_credits is not None:  # an upgrade or downgrade starts with the new cycle
        monthly = account.next_plan_monthly_credits
        session.execute(update(accounts).where(accounts.c.id == account.id)
                        .values(plan_monthly_credits=monthly, next_plan_monthly_credits=None))
    amount = monthly * cycle_months(account.plan_cycle)
    if not amount or account.credit_hold:
        return 0
    kind = "rollover" if account.plan_rollover == "fifo_12m" else "plan"
    ledger.grant(session, account.id, amount, kind, granted_at=ended, reference=f"plan:{period.shift(1)}",
                 idempotency_key=f"{key}:grant")
    return amount


def _allocate(session: Session, account_id: str, ended: datetime, key: str) -> int:
    """Each user's monthly credits, from what the pool has available, in user id order."""
    seats = list(session.execute(select(users.c.id, users.c.monthly_credits).where(
        users.c.account_id == account_id, users.c.role == "user", users.c.deleted_at.is_(None),
        users.c.monthly_credits > 0).order_by(users.c.id)))
    given = 0
    for seat in seats:
        room = session.scalar(select(ledger.POOL_AVAILABLE).where(accounts.c.id == account_id))
        amount = min(seat.monthly_credits, max(room, 0))
        if amount:
            ledger.transfer(session, account_id, seat.id, amount, now=ended,
                            idempotency_key=f"{key}:allocation:{seat.id}")
            given += amount
    return given


def _finish_bill(database: Database, bill: Row, status: str, reference: str, now: datetime) -> None:
    """Record the outcome; an unpaid bill starts dunning (which retries the card and reminds the owner)."""
    with database.unit_of_work() as session:
        finished = session.execute(update(runs).where(runs.c.id == bill.id, runs.c.status == "pending")
                                   .values(status=status, reference=reference, completed_at=utc(now))
                                   .returning(runs.c.id)).first()
        if finished and status == "declined":
            dunning.start_dunning(session, bill.account_id, reason="month_end", amount_cents=bill.amount_cents,
                                  currency=default_price_list().currency,
                                  reference=f"month-end:{bill.account_id}:{bill.period}", now=utc(now))


def _insert(session: Session, table):
    dialect = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
    return dialect.insert(table)
