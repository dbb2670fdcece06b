"""Month-end: what happens to an account's credits when one of its local months ends.

Closing a period, in one transaction under the account lock, at the instant the period ended:
1. expire lots due by then (plan credits of the ended cycle, rollover lots whose 12 months are up;
   neither while `rollover_protection` is on), as the first ledger operation after their expiry would
   (book._lapse_due): dated `expires_at`, less what holds taken before it still need. Usually an
   operation got there first; a month-end that runs late changes nothing a customer could spend;
2. overdraft/postpaid accounts: reset a pool below zero to zero and open a `bill` for it;
3. charge the phone numbers' monthly credits (a `month_end_charge` entry; released numbers cost
   nothing); an account on the credit hold plan (`credit_hold`) owes the price list's small monthly
   fee, added to the period's bill;
   debt is billed at its plan tier's `debt_cents_per_credit`, rounded up once per bill;
4. when a cycle ends (cycles count from `cycle_anchor_at`): apply a pending plan change, grant the next
   cycle's credits (none while `credit_hold`, none to a canceled account): `plan` lots, or `rollover`
   lots on a fifo_12m plan;
5. give each role-`user` user its monthly credits from the pool (as much as the pool holds);
6. advise: the plan that would have cost least over the last three months (shared.billing.advice) and when the
   credits are forecast to run out (shared.billing.forecasts), counted in the summary and told in a plan.advice
   event to the accounts that take it.

A completed `close` row in billing_runs, written in the same transaction, makes the close happen
once per (account, period): a second run, a second scheduler or a retried message finds it and
changes nothing; every entry and lot is keyed as well. A period is never closed before the account's
earlier ones: closing "through" a period first closes any it missed (catch-up after downtime).

Closing is set-wise, because month-end closes every account at once (100,000 accounts in a minute):
a batch of accounts is locked in id order by one statement, claimed by one, read by three; each
account's close is then worked out in memory exactly as the ledger functions would do it (same
entries, keys, balance_after, burn order) and written back with one statement per table. There is
one path: a single account is a batch of one.

Collecting a bill is a separate step because it talks to the payment gateway: it runs after the
close committed, keyed by (account, period), and a transient gateway error leaves it pending for a
retry. A declined bill starts dunning; the credits were already reset.
"""

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, fields
from datetime import datetime, timedelta

from sqlalchemy import Row, bindparam, func, insert, select, update
from sqlalchemy.orm import Session

from shared.billing import advice, dunning, forecasts, purchases
from shared.billing.calendar import Period, cycle_months, ends_cycle, period_end, period_of, period_start
from shared.billing.payments import PaymentGateway
from shared.billing.price_list import PriceList, current_price_list
from shared.db import Database, any_of, copy_rows, insert_on_conflict
from shared.errors import InsufficientCredits, NotFound
from shared.events import outbox
from shared.events.outbox import account_locked, account_unlocked
from shared.events.types import LOCK_TYPES
from shared.ledger import book
from shared.ledger.burn_order import DEFAULT_PRIORITY, burn_key
from shared.ledger.expiry import PendingHold, can_lapse, default_expiry, lapsing, local_date, next_expiry, utc, zone
from shared.models import Account, AutoRecharge, BillingRun, Entry, Hold, Lot, Payment, PhoneNumber, User
from shared.reporting import daily_usage

accounts = Account.__table__
runs = BillingRun.__table__
users = User.__table__
numbers = PhoneNumber.__table__
lots = Lot.__table__
holds = Hold.__table__
entries = Entry.__table__

BILLED_POLICIES = ("overdraft", "postpaid")
CHARGE_THREADS = 4  # bills of a batch charged at once


@dataclass
class Summary:
    """What a month-end did (or, in a dry run, would do). Amounts in millicredits."""

    period: str
    dry_run: bool = False
    accounts: int = 0  # accounts looked at
    closed: int = 0  # periods closed now (catch-up can close more than one per account)
    already_closed: int = 0
    not_ended: int = 0  # the period has not ended yet in the account's time zone
    not_opened: int = 0  # the account was created after the period: nothing of it is ever closed
    failed: list[str] = field(default_factory=list)
    expired: int = 0
    billed: int = 0
    credit_hold_fee_cents: int = 0
    shared_short_code_fee_cents: int = 0
    number_fees: int = 0
    granted: int = 0
    allocated: int = 0
    payments_succeeded: int = 0
    payments_declined: int = 0
    payments_pending: int = 0
    advised: int = 0  # accounts a cheaper plan (or credit hold, or rollover protection) was advised to
    advice_saving_cents: int = 0  # what those would have saved over their last three months
    running_out: int = 0  # accounts forecast to run out of credits before their next month-end

    def add(self, other: "Summary") -> None:
        for f in fields(self):
            if f.name in ("period", "dry_run"):
                continue
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))

    def as_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}


def close_batch(session: Session, account_ids: Iterable[str], through: Period, *, now: datetime,
                price_list: PriceList | None = None) -> Summary:
    """Close, for each account, every period not yet closed up to and including `through`, oldest first.

    The accounts are locked in id order; then each round closes the next pending period of every account
    that has one (one round unless a month-end was missed), set-wise: a batch of one is the same code.
    """
    summary = Summary(str(through))
    pending: dict[str, list[Period]] = {}
    for account in _lock(session, account_ids):
        summary.accounts += 1
        if period_end(through, account.timezone) > utc(now):
            summary.not_ended += 1
        elif through < period_of(utc(account.created_at), account.timezone):
            summary.not_opened += 1
        elif periods := _unclosed(account, through):
            pending[account.id] = periods
        else:
            summary.already_closed += 1
    for index in range(max(map(len, pending.values()), default=0)):
        summary.add(_close_round(session, {account_id: periods[index] for account_id, periods in pending.items()
                                           if index < len(periods)}, now=now,
                                 price_list=price_list or current_price_list(session)))
    return summary


def close_accounts(database: Database, account_ids: list[str], through: Period, *, now: datetime,
                   dry_run: bool = False, price_list: PriceList | None = None) -> Summary:
    """Close a batch in one transaction (fast path); if any account fails, each in its own, to isolate it."""
    summary = Summary(str(through), dry_run=dry_run)
    try:
        summary.add(_in_transaction(database, account_ids, through, now=now, dry_run=dry_run, price_list=price_list))
    except Exception:
        for account_id in account_ids:
            try:
                summary.add(_in_transaction(database, [account_id], through, now=now, dry_run=dry_run,
                                            price_list=price_list))
            except Exception:
                summary.accounts += 1
                summary.failed.append(account_id)
    return summary


@dataclass(frozen=True)
class PeriodRuns:
    """What month-end did for one period, from its billing_runs rows: the operator's history."""

    period: str
    closed: int  # accounts whose period is closed
    billed: int  # bills collected for it, by outcome below
    paid: int
    declined: int
    pending: int
    billed_credits: int  # millicredits of debt billed


def recent_periods(session: Session, *, limit: int = 12) -> list[PeriodRuns]:
    """The latest `limit` periods month-end ran for, newest first (one grouped read of billing_runs)."""
    periods = list(session.scalars(select(BillingRun.period).distinct().order_by(BillingRun.period.desc())
                                   .limit(limit)))
    counts: dict[str, dict[str, int]] = {period: {} for period in periods}
    for period, step, status, number, amount in session.execute(
            select(BillingRun.period, BillingRun.step, BillingRun.status, func.count(),
                   func.coalesce(func.sum(BillingRun.amount), 0))
            .where(BillingRun.period.in_(periods)).group_by(BillingRun.period, BillingRun.step, BillingRun.status)):
        tally = counts[period]
        tally[f"{step}:{status}"] = tally.get(f"{step}:{status}", 0) + number
        if step == "bill":
            tally["bill"] = tally.get("bill", 0) + number
            tally["credits"] = tally.get("credits", 0) + int(amount)  # PostgreSQL's SUM of BIGINT is a numeric
    return [PeriodRuns(period, closed=tally.get("close:completed", 0), billed=tally.get("bill", 0),
                       paid=tally.get("bill:paid", 0), declined=tally.get("bill:declined", 0),
                       pending=tally.get("bill:pending", 0), billed_credits=tally.get("credits", 0))
            for period, tally in counts.items()]


def run(database: Database, gateway: PaymentGateway | None, period: Period, *, now: datetime,
        dry_run: bool = False, batch_size: int = 500, progress: Callable[[Summary], None] | None = None,
        price_list: PriceList | None = None) -> Summary:
    """Month-end of `period` for every account, in id order, one transaction per batch; then collect bills.

    The same use case as the scheduler's; `progress` is told after each batch. A dry run writes
    nothing and charges nothing.
    """
    summary = Summary(str(period), dry_run=dry_run)
    for batch in account_batches(database, batch_size):
        done = close_accounts(database, batch, period, now=now, dry_run=dry_run, price_list=price_list)
        if not dry_run and gateway is not None and (done.billed or done.credit_hold_fee_cents
                                                    or done.shared_short_code_fee_cents):
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
    """Charge the account's pending bills: collect_batch for one account."""
    return collect_batch(database, gateway, [account_id], now=now)


def collect_batch(database: Database, gateway: PaymentGateway, account_ids: Iterable[str], *, now: datetime) -> Summary:
    """Charge the accounts' pending bills through the payments module, one payment per (account, period).

    The payment's key is `month-end:<account>:<period>:<card>`, so a crash or a second collector never
    charges twice; a new card on file makes a new payment only once none of the bill's is in play
    (purchases.in_play: one whose answer was lost is asked again, on its card); a gateway `error` leaves the bill
    pending and the next collection retries it (attempt + 1). A bill with no card on file, or declined, is left
    `declined` for dunning. The payments are opened in one transaction, charged together
    (purchases.charge_payments: a transaction per step for the batch) and the bills finished in one.
    """
    summary = Summary("")
    with database.unit_of_work() as session:
        # locked until the payments are opened: a second collector waits, then finds them in play
        bills = list(session.execute(select(runs).where(any_of(session, runs.c.account_id, sorted(set(account_ids))),
                                                        runs.c.step == "bill", runs.c.status == "pending")
                                     .order_by(runs.c.account_id, runs.c.period).with_for_update()))
        if not bills:
            return summary
        methods = dict(session.execute(select(AutoRecharge.account_id, AutoRecharge.payment_method).where(
            AutoRecharge.account_id.in_({bill.account_id for bill in bills}))).all())
        billed = [bill for bill in bills if methods.get(bill.account_id) is not None]
        # a bill's payment in play (its answer lost, say) is charged again on its own card, whatever is on file now;
        # none is older than its bill, so earlier months' paid bills are not read
        in_play_by_bill = {payment.idempotency_key.rsplit(":", 1)[0]: payment for payment in session.scalars(
            select(Payment).where(Payment.source == "month_end", purchases.in_play(),
                                  any_of(session, Payment.account_id, sorted({bill.account_id for bill in billed})),
                                  Payment.created_at >= min((bill.created_at for bill in billed), default=now))
            .order_by(Payment.created_at.desc()))}
        fresh = [bill for bill in billed if _payment_key(bill) not in in_play_by_bill]
        opened = dict(zip([bill.id for bill in fresh], purchases.open_payments(session, [dict(
            account_id=bill.account_id, source="month_end",
            idempotency_key=f"{_payment_key(bill)}:{methods[bill.account_id]}", credits=0,
            amount_cents=bill.amount_cents, currency=current_price_list(session).currency,
            payment_method=methods[bill.account_id]) for bill in fresh], now=utc(now))))
        for payment in opened.values():
            if payment.status == "error":
                purchases.retry(session, payment, now=utc(now))
        payments = {bill.id: (opened.get(bill.id) or in_play_by_bill[_payment_key(bill)]).id for bill in billed}
    charged = purchases.charge_payments(database, gateway, list(payments.values()), now=utc(now),
                                        threads=CHARGE_THREADS)
    charged = {bill_id: charged[payment_id] for bill_id, payment_id in payments.items()}
    outcomes: list[tuple[Row, str, str]] = []
    for bill in bills:
        if bill.id not in payments:
            outcomes.append((bill, "declined", "no_payment_method"))
            summary.payments_declined += 1
            continue
        payment = charged[bill.id]
        if payment.status in (*purchases.OPEN_STATUSES, "error"):
            summary.payments_pending += 1
            continue
        paid = payment.status == "succeeded"
        outcomes.append((bill, "paid" if paid else "declined", payment.id))
        summary.payments_succeeded += paid
        summary.payments_declined += not paid
    _finish_bills(database, outcomes, now)
    return summary


# --- internals -------------------------------------------------------------------------------------

def _payment_key(bill: Row) -> str:
    """What the idempotency keys of a bill's payments start with (`:<card>` follows)."""
    return f"month-end:{bill.account_id}:{bill.period}"


class _Rollback(Exception):
    def __init__(self, summary: Summary):
        self.summary = summary


def _in_transaction(database: Database, account_ids: Iterable[str], through: Period, *, now: datetime,
                    dry_run: bool, price_list: PriceList | None) -> Summary:
    try:
        with database.unit_of_work() as session:
            summary = close_batch(session, account_ids, through, now=now, price_list=price_list)
            summary.dry_run = dry_run
            if dry_run:
                raise _Rollback(summary)
    except _Rollback as rolled_back:
        return rolled_back.summary
    return summary


def _lock(session: Session, account_ids: Iterable[str]) -> list[Row]:
    """Lock the accounts in id order (concurrent batches and reserves cannot deadlock), with each one's last close."""
    ids = sorted(set(account_ids))
    last = (select(func.max(runs.c.period)).where(runs.c.account_id == accounts.c.id, runs.c.step == "close")
            .scalar_subquery().label("last_closed"))
    rows = list(session.execute(select(accounts.c.id, accounts.c.timezone, accounts.c.created_at, last)
                                .where(any_of(session, accounts.c.id, ids)).order_by(accounts.c.id)
                                .with_for_update(of=accounts)).all())
    if len(rows) < len(ids):
        raise NotFound(f"No account {sorted(set(ids) - {row.id for row in rows})[0]}.")
    return rows


def _unclosed(account: Row, through: Period) -> list[Period]:
    """The periods to close, oldest first: after the last closed one, or from the month the account was created
    in; never one before it."""
    if account.last_closed is not None:
        start = Period.parse(account.last_closed).shift(1)
    else:
        start = period_of(utc(account.created_at), account.timezone)
    return [Period.from_index(i) for i in range(start.index, through.index + 1)]


def _close_round(session: Session, targets: dict[str, Period], *, now: datetime, price_list: PriceList) -> Summary:
    """Close one period per account (the accounts are locked): a few statements for the whole round.

    Claim the (account, period, close) rows; read the accounts' open lots, number fees and seats;
    work each close out in memory (_Close, in the ledger's order and burn order); write it all back.
    """
    ids = sorted(targets)
    # The claim: the accounts are locked and each period is after the last closed one, so the rows are new; a
    # unique violation means something closed without the lock, and fails the batch rather than close twice.
    session.execute(insert(runs), [dict(account_id=account_id, period=str(targets[account_id]), step="close",
                                        status="completed", created_at=utc(now), completed_at=utc(now))
                                   for account_id in ids])
    summary = Summary("")
    open_lots: dict[str, list[_Lot]] = {account_id: [] for account_id in ids}
    for row in session.execute(select(lots).where(any_of(session, lots.c.account_id, ids), lots.c.remaining > 0)).all():
        open_lots[row.account_id].append(_Lot.of(row))
    pending: dict[str, list[PendingHold]] = {account_id: [] for account_id in ids}
    for row in session.execute(select(holds.c.account_id, holds.c.user_id, holds.c.from_allocation, holds.c.created_at,
                                      holds.c.amount).where(any_of(session, holds.c.account_id, ids),
                                                           holds.c.status == "pending")).all():
        pending[row.account_id].append(PendingHold(wallet=row.user_id if row.from_allocation else None,
                                                   created_at=row.created_at, amount=row.amount))
    fees = dict(session.execute(select(numbers.c.account_id, func.sum(numbers.c.monthly_cost))
                                .where(any_of(session, numbers.c.account_id, ids), numbers.c.released_at.is_(None))
                                .group_by(numbers.c.account_id)).all())
    seats: dict[str, list[Row]] = {account_id: [] for account_id in ids}
    for seat in session.execute(select(users.c.id, users.c.account_id, users.c.monthly_credits, users.c.balance).where(
            any_of(session, users.c.account_id, ids), users.c.role == "user", users.c.deleted_at.is_(None),
            users.c.monthly_credits > 0).order_by(users.c.id)):
        seats[seat.account_id].append(seat)
    closes = [_Close(account, targets[account.id], open_lots[account.id], pending[account.id], price_list)
              for account in session.execute(select(accounts).where(any_of(session, accounts.c.id, ids))
                                           .order_by(accounts.c.id)).all()]
    for close in closes:
        close.expire()
        close.reset_debt()
        close.charge_numbers(int(fees.get(close.account.id) or 0))  # PostgreSQL sums to Decimal
        close.charge_credit_hold_fee()
        close.charge_shared_short_code_fee()
        close.grant_next_cycle()
    _insert_grant_lots(session, [close for close in closes if close.grant_lot is not None])
    for close in closes:
        close.allocate(seats[close.account.id])
        summary.add(close.summary)
    _write(session, closes, now)
    summary.add(_advise(session, closes, now=now, price_list=price_list))
    return summary


_ADVISED_COLUMNS = ("id", "timezone", "created_at", "cycle_anchor_at", "status", "balance", "held", "plan_monthly_credits",
                    "next_plan_monthly_credits", "plan_cycle", "plan_rollover", "rollover_protection", "credit_hold",
                    "low_balance_threshold")


def _advise(session: Session, closes: list["_Close"], *, now: datetime, price_list: PriceList) -> Summary:
    """After the closes are written, set-wise: each account's plan advice over the three months up to the one
    closed and its run-out forecast from now; a plan.advice event to each account that takes it (one statement
    finds them, so the others cost nothing)."""
    summary = Summary("")
    ids = [close.account.id for close in closes]
    rows = session.execute(select(*(accounts.c[name] for name in _ADVISED_COLUMNS))
                           .where(any_of(session, accounts.c.id, ids)).order_by(accounts.c.id)).all()
    # one read of what each account spent, from the first of the months advised on or the forecast's history
    spent = daily_usage.daily_totals(session, ids, since_by_account={close.account.id: min(
        local_date(period_start(close.period.shift(1 - advice.CYCLES), close.account.timezone),
                   zone(close.account.timezone)),
        local_date(utc(now), zone(close.account.timezone)) - timedelta(days=forecasts.HISTORY_DAYS))
        for close in closes})
    advised = advice.advice_many(session, rows, through={close.account.id: close.period for close in closes},
                                 price_list=price_list, spent=spent)
    told = outbox.takers(session, ids, "plan.advice")
    # the summary asks only whether each runs out before the next month-end; an event shows its date, a year ahead
    runs_out = forecasts.runs_out_by_account(session, rows, now=now, days=spent, horizon={
        close.account.id: max(1, (period_end(close.period.shift(1), close.account.timezone) - utc(now)).days + 2)
        for close in closes if close.account.id not in told})
    for close in closes:
        account_id, advice_now, out = close.account.id, advised[close.account.id], runs_out[close.account.id]
        if advice_now.changes:
            summary.advised += 1
            summary.advice_saving_cents += advice_now.saving_cents
        if out is not None and out < period_end(close.period.shift(1), close.account.timezone):
            summary.running_out += 1
        if account_id in told:
            outbox.emit(session, "plan.advice", account_id=account_id, key=f"plan.advice:{account_id}:{close.period}",
                        now=utc(now), data={**advice_now.as_dict(), "period": str(close.period),
                                            "runs_out_at": out and out.isoformat()})
    return summary


@dataclass
class _Lot:
    """A lot as month-end moves it; `stored` is the remaining the database holds (None: not inserted yet)."""

    id: int | None
    user_id: str | None
    kind: str
    amount: int
    remaining: int
    priority: int
    granted_at: datetime
    expires_at: datetime | None
    reference: str | None
    stored: int | None

    @classmethod
    def of(cls, row: Row) -> "_Lot":
        return cls(id=row.id, user_id=row.user_id, kind=row.kind, amount=row.amount, remaining=row.remaining,
                   priority=row.priority, granted_at=utc(row.granted_at),
                   expires_at=None if row.expires_at is None else utc(row.expires_at), reference=row.reference,
                   stored=row.remaining)

    @classmethod
    def given(cls, piece: dict) -> "_Lot":
        """A piece of a lot allocated to a user, as the row it is inserted as."""
        return cls(id=None, user_id=piece["user_id"], kind=piece["kind"], amount=piece["amount"],
                   remaining=piece["remaining"], priority=piece["priority"], granted_at=piece["granted_at"],
                   expires_at=piece["expires_at"], reference=piece["reference"], stored=None)


class _Close:
    """One account's close of one period, worked out in memory from its locked rows.

    Each step does what the ledger function of the same name does (expire_lots, reset_debt, charge_pool,
    grant, transfer), with the same entries, keys and balance_after, so a batch needs no statement per
    account: the account row is locked, so nothing moves underneath.
    """

    def __init__(self, account: Row, period: Period, open_lots: list[_Lot], pending: list[PendingHold],
                 price_list: PriceList):
        self.account, self.period, self.lots, self.price_list = account, period, open_lots, price_list
        self.pending = pending
        self.ended = period_end(period, account.timezone)
        self.key = f"month-end:{account.id}:{period}"
        self.balance, self.allocated = account.balance, account.allocated
        self.status, self.status_reason = account.status, account.status_reason
        self.plan_monthly, self.next_plan = account.plan_monthly_credits, account.next_plan_monthly_credits
        self.grant_lot: _Lot | None = None
        self.grant_entry: dict | None = None
        self.user_lots: list[dict] = []
        self.user_deltas: dict[str, int] = {}
        self.entries: list[dict] = []
        self.summary = Summary(str(period), closed=1)
        self.debt_cents = 0  # what the reset debt is billed at, on the ended period's plan

    def expire(self) -> None:
        """book._lapse_due at the period's end: one `expiry` entry per lot, dated its expiry, in expiry order."""
        pieces = lapsing(sorted(self.lots, key=burn_key), self.pending, self.ended,
                         protected=self.account.rollover_protection)
        for lot, amount in sorted(pieces, key=lambda piece: (piece[0].expires_at, piece[0].id)):
            lot.remaining -= amount
            self.balance -= amount
            if lot.user_id is not None:
                self.allocated -= amount
                self.user_deltas[lot.user_id] = self.user_deltas.get(lot.user_id, 0) - amount
            self._entry(lot.user_id, "expiry", -amount, lot.reference, f"expiry:lot:{lot.id}:{lot.remaining}",
                        f"expired: {lot.kind} lot {lot.id}", at=lot.expires_at)
            self.summary.expired += amount

    def next_expiry(self) -> datetime | None:
        """accounts.next_expiry_at after the close: the pool's lots and the pieces users were given."""
        left = [(lot, lot.remaining) for lot in self.lots]
        left += [(_Lot.given(piece), piece["remaining"]) for piece in self.user_lots]
        return next_expiry(left, self.account.rollover_protection)

    def reset_debt(self) -> None:
        """book.reset_debt for overdraft/postpaid accounts: the pool's debt back to zero, a bill for it."""
        if self.account.overdraft_policy not in BILLED_POLICIES:
            return
        debt = max(0, self.allocated - self.balance)
        if not debt:
            return
        self.balance += debt
        if self.status == "locked":
            self.status, self.status_reason = "active", None
        self._entry(None, "reset", debt, f"bill:{self.period}", f"{self.key}:reset",
                    "negative balance billed and reset to zero")
        self.summary.billed = debt
        self.debt_cents = self.price_list.debt_cents(self.plan_monthly, debt)

    def charge_numbers(self, fees: int) -> None:
        """book.charge_pool of the phone numbers' monthly credits: burns pool lots, may lock a prepaid pool."""
        if not fees:
            return
        if (self.status == "active" and self.account.overdraft_policy == "prepaid"
                and self.balance - self.allocated - fees < 0):
            self.status, self.status_reason = "locked", book.LOCK_REASON
        self.balance -= fees
        self._take(fees, partial=True)
        self._entry(None, "month_end_charge", -fees, f"numbers:{self.period}", f"{self.key}:numbers", None)
        self.summary.number_fees = fees

    def charge_credit_hold_fee(self) -> None:
        """The credit hold plan keeps accumulated credits usable for a small monthly fee, billed in money; a
        canceled account has no plan, so it pays none (its purchased credits stay without it)."""
        if self.account.credit_hold and self.status != "canceled":
            self.summary.credit_hold_fee_cents = self.price_list.credit_hold_monthly_fee_cents

    def charge_shared_short_code_fee(self) -> None:
        """A keyword on the shared short code costs the price list's monthly fee, billed in money like credit hold's;
        a canceled account keeps its keyword (texts naming it still land there) but, as for its numbers, pays no fee."""
        if self.account.shared_short_code_keyword is not None and self.status != "canceled":
            self.summary.shared_short_code_fee_cents = self.price_list.shared_short_code_monthly_fee_cents

    def grant_next_cycle(self) -> None:
        """When a cycle ends: a pending plan change applies, then book.grant of the next cycle's credits."""
        account = self.account
        anchor = period_of(utc(account.cycle_anchor_at), account.timezone)
        if self.status == "canceled" or self.period < anchor:  # canceled, or before its cycles (re)started
            return
        if not ends_cycle(self.period, anchor, account.plan_cycle):
            return
        if self.next_plan is not None:  # an upgrade or downgrade starts with the new cycle
            self.plan_monthly, self.next_plan = self.next_plan, None
        amount = self.plan_monthly * cycle_months(account.plan_cycle)
        if not amount or account.credit_hold:
            return
        kind = "rollover" if account.plan_rollover == "fifo_12m" else "plan"
        pool = self.balance - self.allocated
        if self.status == "locked" and pool + amount >= 0:
            self.status, self.status_reason = "active", None
        self.grant_lot = _Lot(id=None, user_id=None, kind=kind, amount=amount,
                              remaining=amount - min(amount, max(0, -pool)),  # a pool in debt is repaid first
                              priority=DEFAULT_PRIORITY[kind], granted_at=self.ended,
                              expires_at=default_expiry(kind, self.ended, account.timezone, account.plan_cycle,
                                                        utc(account.cycle_anchor_at)),
                              reference=f"plan:{self.period.shift(1)}", stored=None)
        self.lots.append(self.grant_lot)
        self.balance += amount
        self.grant_entry = self._entry(None, "grant", amount, self.grant_lot.reference, f"{self.key}:grant", None)
        self.summary.granted = amount

    def allocate(self, seats: list[Row]) -> None:
        """book.transfer of each user's monthly credits, in user id order, as far as the pool has room."""
        if self.grant_lot is not None:  # its entry's memo names the lot, whose id is known now
            self.grant_entry["memo"] = f"{self.grant_lot.kind} lot {self.grant_lot.id}"
        held = self.account.held - self.account.allocated_held
        for seat in seats:
            amount = min(seat.monthly_credits, max(self.balance - self.allocated - held, 0))
            if not amount:
                continue
            key = f"{self.key}:allocation:{seat.id}"
            repay = max(0, -seat.balance)  # a user in debt is repaid first, as book.transfer does
            for lot, taken in self._take(amount, partial=False):
                repaid = min(taken, repay)
                repay -= repaid
                taken -= repaid
                if not taken:
                    continue
                self.user_lots.append(dict(account_id=self.account.id, user_id=seat.id, kind=lot.kind, amount=taken,
                                           remaining=taken, priority=lot.priority, granted_at=lot.granted_at,
                                           expires_at=lot.expires_at, reference=lot.reference,
                                           idempotency_key=f"{key}:lot:{lot.id}"))
            self.allocated += amount
            self.user_deltas[seat.id] = self.user_deltas.get(seat.id, 0) + amount
            memo = f"allocation to user {seat.id}"
            self._entry(None, "allocation", -amount, None, f"{key}:pool", memo, balance_after=self.balance - amount)
            self._entry(seat.id, "allocation", amount, None, f"{key}:user", memo)
            self.summary.allocated += amount

    def _take(self, amount: int, *, partial: bool) -> list[tuple[_Lot, int]]:
        """Take `amount` from the pool's lots in burn order; `partial`: what they lack stays as debt.

        A move to a user (not `partial`) leaves an expired lot alone: what is left of it belongs to the pending
        holds that took it before it expired, and moved it would only lapse in the user's wallet.
        """
        pieces = []
        for lot in sorted((lot for lot in self.lots if lot.user_id is None and lot.remaining > 0), key=burn_key):
            if amount == 0:
                break
            if not partial and can_lapse(lot, self.account.rollover_protection) and lot.expires_at <= self.ended:
                continue
            taken = min(amount, lot.remaining)
            lot.remaining -= taken
            amount -= taken
            pieces.append((lot, taken))
        if amount and not partial:
            raise InsufficientCredits("the lots do not hold the credits to move", available=0, required=amount)
        return pieces

    def _entry(self, user_id: str | None, kind: str, amount: int, reference: str | None, key: str, memo: str | None,
               *, balance_after: int | None = None, at: datetime | None = None) -> dict:
        entry = dict(account_id=self.account.id, user_id=user_id, at=at or self.ended, kind=kind, amount=amount,
                     balance_after=self.balance if balance_after is None else balance_after, reference=reference,
                     hold_id=None, idempotency_key=key, memo=memo)
        self.entries.append(entry)
        return entry


def _insert_grant_lots(session: Session, closes: list[_Close]) -> None:
    """Insert the plan lots granted; their ids are needed for allocation keys and memos, found by their keys."""
    if not closes:
        return
    by_key = {f"{close.key}:grant": close.grant_lot for close in closes}
    copy_rows(session, lots, [
        dict(account_id=close.account.id, user_id=None, kind=lot.kind, amount=lot.amount, remaining=lot.remaining,
             priority=lot.priority, granted_at=lot.granted_at, expires_at=lot.expires_at, reference=lot.reference,
             idempotency_key=f"{close.key}:grant") for close in closes for lot in [close.grant_lot]])
    for lot_id, key in session.execute(select(lots.c.id, lots.c.idempotency_key)
                                       .where(any_of(session, lots.c.idempotency_key, list(by_key)))).all():
        by_key[key].id, by_key[key].stored = lot_id, by_key[key].remaining


def _write(session: Session, closes: list[_Close], now: datetime) -> None:
    """Write the round back: users, lots, new users' lots, entries (ids in order), accounts, bills."""
    user_deltas = [dict(user_key=user_id, delta=delta) for close in closes
                   for user_id, delta in sorted(close.user_deltas.items()) if delta]
    if user_deltas:
        session.execute(update(users).where(users.c.id == bindparam("user_key"))
                        .values(balance=users.c.balance + bindparam("delta")), user_deltas)
    moved = [dict(lot_id=lot.id, left=lot.remaining) for close in closes for lot in close.lots
             if lot.remaining != lot.stored]
    if moved:
        session.execute(update(lots).where(lots.c.id == bindparam("lot_id")).values(remaining=bindparam("left")), moved)
    copy_rows(session, lots, [row for close in closes for row in close.user_lots])
    # COPY takes the lines' ids from the sequence in list order: an account's entries get ascending ids, so
    # balance_after is the running sum in id order.
    copy_rows(session, entries, [line for close in closes for line in close.entries])
    session.execute(update(accounts).where(accounts.c.id == bindparam("account_key")).values(
        balance=bindparam("new_balance"), allocated=bindparam("new_allocated"), status=bindparam("new_status"),
        status_reason=bindparam("new_reason"), plan_monthly_credits=bindparam("new_plan"),
        next_plan_monthly_credits=bindparam("new_next_plan"), next_expiry_at=bindparam("new_next_expiry"),
    ), [dict(account_key=close.account.id, new_balance=close.balance, new_allocated=close.allocated,
             new_status=close.status, new_reason=close.status_reason, new_plan=close.plan_monthly,
             new_next_plan=close.next_plan, new_next_expiry=close.next_expiry()) for close in closes])
    # the few whose lock changed: their account.locked / account.unlocked, asked only of the accounts whose endpoints
    # take one of the pair (for the others nothing would be written: two statements each, for nothing)
    changed = [close for close in closes if (close.status, close.account.status) in (("locked", "active"),
                                                                                     ("active", "locked"))]
    told = set().union(*(outbox.takers(session, [close.account.id for close in changed], event_type)
                         for event_type in LOCK_TYPES)) if changed else set()
    for close in (close for close in changed if close.account.id in told):
        if close.status == "locked":
            account_locked(session, close.account.id, reason=close.status_reason, balance=close.balance, now=now)
        else:
            account_unlocked(session, close.account.id, balance=close.balance, now=now)
    if bills := [close for close in closes if close.summary.billed or close.summary.credit_hold_fee_cents
                 or close.summary.shared_short_code_fee_cents]:
        session.execute(insert_on_conflict(session, runs).on_conflict_do_nothing(), [
            dict(account_id=close.account.id, period=str(close.period), step="bill", status="pending",
                 amount=close.summary.billed,
                 amount_cents=(close.debt_cents + close.summary.credit_hold_fee_cents
                               + close.summary.shared_short_code_fee_cents),
                 created_at=utc(now))
            for close in bills])


def _finish_bills(database: Database, outcomes: list[tuple[Row, str, str]], now: datetime) -> None:
    """Record the outcomes (bill, status, reference); an unpaid bill starts dunning (retries and reminders)."""
    if not outcomes:
        return
    with database.unit_of_work() as session:
        paid = [dict(bill_key=bill.id, paid_by=reference) for bill, status, reference in outcomes if status == "paid"]
        if paid:  # one statement for the batch: a paid bill starts nothing
            session.connection().execute(update(runs).where(runs.c.id == bindparam("bill_key"), runs.c.status == "pending")
                                         .values(status="paid", reference=bindparam("paid_by"), completed_at=utc(now)),
                                         paid)
        for bill, status, reference in (outcome for outcome in outcomes if outcome[1] != "paid"):
            # in account id order: start_dunning locks the account
            finished = session.execute(update(runs).where(runs.c.id == bill.id, runs.c.status == "pending")
                                       .values(status=status, reference=reference, completed_at=utc(now))
                                       .returning(runs.c.id)).first()
            if finished and status == "declined":
                dunning.start_dunning(session, bill.account_id, reason="month_end", amount_cents=bill.amount_cents,
                                      currency=current_price_list(session).currency,
                                      reference=f"month-end:{bill.account_id}:{bill.period}", now=utc(now))
