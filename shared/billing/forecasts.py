"""When an account's (or a user's) credits run out: its recent daily spending projected forward, with what is
scheduled, what expires and what the plan grants on the way.

The model, in integer millicredits throughout:
- the daily spending of the last HISTORY_DAYS local days (daily usage, shared.reporting) is the history;
- a weekday pattern is taken from the last SEASON_DAYS days (each weekday's share of those four weeks), when the
  history is that long: Monday's texts are not Sunday's;
- a straight-line trend is fitted (least squares) to the last TREND_DAYS days with the weekday pattern taken out,
  and followed at most TREND_DAYS past its data, then held level: a growing account is projected to grow, a
  noisy one does not run away;
- the days ahead are then walked from `now` to HORIZON_DAYS: each day's projected spending (today's less what
  was already spent today), scheduled sends (scheduled messages and campaign and drip steps not fanned out, at
  their time), lots expiring unspent (in burn order, as the ledger would burn them) and the plan's next grants.

`runs_out_at` is the instant the available credits reach zero, with no auto-recharge (`auto_recharges_expected`
says how many would fire in the next RECHARGE_DAYS). `confidence` says how far to trust it: `high` with four
weeks of history whose days stray from the fitted model by at most a quarter of the mean, `medium` with a week
and at most half, `low` otherwise, `none` with no spending in the history (nothing to project).
"""

from bisect import bisect_left, bisect_right
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from functools import lru_cache
from itertools import accumulate

from sqlalchemy import select
from sqlalchemy.orm import Session

from shared.billing.calendar import Period, cycle_months, ends_cycle, period_end, period_of, period_start
from shared.db import any_of
from shared.errors import NotFound
from shared.ledger import book
from shared.ledger.burn_order import DEFAULT_PRIORITY, burn_key
from shared.ledger.expiry import can_lapse, default_expiry, local_date, local_midnight, utc, zone
from shared.models import Account, AutoRecharge, Lot, User
from shared.reporting import daily_usage, scheduled

HISTORY_DAYS = 90
TREND_DAYS = 30
SEASON_DAYS = 28
HORIZON_DAYS = 366
RECHARGE_DAYS = 30
PPM = 1_000_000  # weekday factors in millionths

lots_table = Lot.__table__


@dataclass
class _SimLot:
    """A lot as the walk burns it (LotLike for can_lapse and burn_key)."""

    id: int
    user_id: str | None
    kind: str
    remaining: int
    priority: int
    granted_at: datetime
    expires_at: datetime | None

    def copy(self) -> "_SimLot":
        return _SimLot(self.id, self.user_id, self.kind, self.remaining, self.priority, self.granted_at, self.expires_at)


@dataclass(frozen=True)
class Expiring:
    at: datetime
    credits: int


@dataclass
class Forecast:
    runs_out_at: datetime | None  # in the account's time zone; None: not within HORIZON_DAYS
    daily_rate: int  # projected spending per day over the next week, millicredits
    scheduled_credits: int  # scheduled sends not held yet
    expiring: list[Expiring]  # projected to lapse unspent, soonest first
    confidence: str  # high | medium | low | none
    history_days: int
    low_balance_at: datetime | None  # when available first falls under the low-balance threshold (its notice)
    auto_recharges_expected: int  # in the next RECHARGE_DAYS, with the account's auto-recharge as set
    recent: dict[str, dict[int, int]] = field(default_factory=dict)  # kind -> {7|30|90: spent in the last days}


@dataclass(frozen=True)
class _Wallet:
    """What a forecast walks: the lots it burns, what is available, the plan that refills it."""

    available: int
    lots: list[_SimLot]
    plan_grants: list[tuple[datetime, _SimLot]]
    protected: bool
    threshold: int
    recharge: tuple[int, int] | None  # (threshold, credits) of an enabled auto-recharge


class DailyModel:
    """Projected spending per local day from a history of whole days (oldest first, the last one yesterday)."""

    def __init__(self, history: Sequence[int], yesterday: date):
        self.history = list(history[-HISTORY_DAYS:])
        self.yesterday = yesterday
        n = len(self.history)
        first_weekday = (yesterday.weekday() - (n - 1)) % 7  # the weekday of history[0]
        self.weekday_ppm = [PPM] * 7
        season = self.history[-SEASON_DAYS:]
        if n >= SEASON_DAYS and sum(season):
            per_weekday = [0] * 7
            for t in range(n - SEASON_DAYS, n):
                per_weekday[(first_weekday + t) % 7] += self.history[t]
            self.weekday_ppm = [7 * PPM * spent // sum(season) for spent in per_weekday]
        start = max(0, n - TREND_DAYS)
        self.trend_weekday = (first_weekday + start) % 7  # the weekday of the trend's t = 0
        self.points = [(t - start, self.history[t] * PPM // factor) for t in range(start, n)
                       if (factor := self.weekday_ppm[(first_weekday + t) % 7])]
        self.last_t = n - start - 1
        self.a, self.b, self.c = _least_squares(self.points)

    def day(self, day: date) -> int:
        """Projected spending on a local day after yesterday."""
        return self.days((day - self.yesterday).days - 1, 1)[0]

    def days(self, first: int, count: int) -> list[int]:
        """Projected spending on `count` days from `first` days after today (0: today, whole). The trend stops
        TREND_DAYS past its data, so from then on each week repeats the one before: those are copied."""
        if not self.c:
            return [0] * count
        moving = max(0, min(count, TREND_DAYS + 6 - first))  # days computed one by one, the last week flat
        spending = []
        for offset in range(first, first + moving):
            t = self.last_t + 1 + min(offset, TREND_DAYS - 1)
            level = max(0, (self.a + self.b * t) // self.c)
            spending.append(level * self.weekday_ppm[(self.trend_weekday + self.last_t + 1 + offset) % 7] // PPM)
        if moving < count:
            week = spending[-7:] if len(spending) >= 7 else self.days(first + moving - 7, 7)
            spending += (week * (1 + (count - moving) // 7))[:count - moving]
        return spending

    def confidence(self) -> str:
        """How far the history strays from the fitted model (see the module docstring)."""
        spent = sum(self.history)
        if not spent or not self.c:
            return "none"
        trend = self.history[-TREND_DAYS:]
        squares = 0
        for t, actual in enumerate(trend):  # the trend's points are at t = 0 .. len(trend) - 1
            fitted = (self.a + self.b * t) * self.weekday_ppm[(self.trend_weekday + t) % 7]  # x c x PPM
            squares += (actual * self.c * PPM - fitted) ** 2
        total = sum(trend) * self.c * PPM
        days = len(self.history)
        # spread <= share x mean  <=>  squares / m <= share^2 x (total / m)^2  <=>  m x squares x (1/share)^2 <= total^2
        if days >= SEASON_DAYS and len(trend) * squares * 16 <= total * total:
            return "high"
        if days >= 7 and len(trend) * squares * 4 <= total * total:
            return "medium"
        return "low"


def _least_squares(points: list[tuple[int, int]]) -> tuple[int, int, int]:
    """(a, b, c) with the fitted value at t = (a + b t) / c; a level mean under 7 points; (0, 0, 0) with none."""
    m = len(points)
    if not m:
        return 0, 0, 0
    sy = sum(y for _, y in points)
    if m < 7:
        return sy, 0, m
    st = sum(t for t, _ in points)
    stt = sum(t * t for t, _ in points)
    sty = sum(t * y for t, y in points)
    d = m * stt - st * st
    n = m * sty - st * sy  # slope n / d
    return sy * d - n * st, n * m, m * d


def project(model: DailyModel, wallet: _Wallet, *, now: datetime, timezone: str, today_spent: int,
            sends: Iterable[tuple[datetime, int]], detailed: bool = True, days: int = HORIZON_DAYS) -> Forecast:
    """Walk the days ahead (see the module docstring), `days` of them. `detailed` False (month-end) wants only the
    run-out: the walk stops there, and neither the walk with auto-recharges nor the week's rate is worked out."""
    now = utc(now)
    tz = zone(timezone)
    today = local_date(now, tz)
    sends = [(utc(at), amount) for at, amount in sends]
    spending = model.days(0, days)
    spending[0] = max(0, spending[0] - today_spent)
    walk = _Walk(wallet, now, sends, _midnights(timezone, today, days), spending, recharge=None)
    walk.run(stop_when_out=not detailed)
    recharges = 0
    if detailed and wallet.recharge is not None:
        with_recharges = _Walk(wallet, now, sends, _midnights(timezone, today, RECHARGE_DAYS),
                               spending[:RECHARGE_DAYS], recharge=wallet.recharge)
        with_recharges.run(stop_when_out=False)
        recharges = with_recharges.recharges
    return Forecast(
        runs_out_at=walk.runs_out_at and walk.runs_out_at.astimezone(tz),
        daily_rate=sum(spending[1:8]) // 7 if detailed else 0,
        scheduled_credits=sum(amount for _, amount in sends),
        expiring=[Expiring(at.astimezone(tz), credits) for at, credits in walk.expired],
        confidence=model.confidence() if detailed else "", history_days=len(model.history),
        low_balance_at=walk.low_at and walk.low_at.astimezone(tz), auto_recharges_expected=recharges)


@lru_cache(maxsize=4096)  # a new day is a new key: unbounded, a long-lived process would keep them all
def _midnights(timezone: str, first: date, days: int) -> tuple[datetime, ...]:
    """The UTC instants of the local midnights starting each of `days` days, and the one ending the last: the same
    for every account of a zone on a day, so a batch computes them once."""
    tz = zone(timezone)
    return tuple(local_midnight(first + timedelta(days=offset), tz) for offset in range(days + 1))


class _Walk:
    """The wallet moved through time: spending burns lots in burn order, expiries lapse what is left of a lot,
    grants add one; notes when available reaches the threshold and zero, and the recharges that fire.

    Every event is known before the walk (sends, the lots' expiries, the plan's grants and their expiries), so it is
    one sorted list consumed in order. Between two events the spending is read off its running total (each day's
    spread evenly over it), and the instant a level is crossed is found by bisection: the walk costs its events,
    not its days. Lots are burned only when an expiry needs to know what is left of one."""

    SEND, LAPSE, GRANT = 0, 1, 2

    def __init__(self, wallet: _Wallet, now: datetime, sends: list[tuple[datetime, int]],
                 midnights: tuple[datetime, ...], spending: list[int], *, recharge: tuple[int, int] | None):
        self.bounds = (now, *midnights[1:])  # day i is spent over [bounds[i], bounds[i + 1])
        end = self.bounds[-1]
        self.lots = sorted((lot.copy() for lot in wallet.lots), key=burn_key)  # the walk burns its own copies
        granted = [(at, lot.copy()) for at, lot in wallet.plan_grants if now <= at < end]
        self.available, self.threshold, self.now, self.recharge = wallet.available, wallet.threshold, now, recharge
        self.spending = spending
        self.total = list(accumulate(spending, initial=0))  # spent before day i starts
        self.runs_out_at = now if self.available <= 0 else None
        self.low_at: datetime | None = None
        self.low_pending = self.threshold > 0 and self.available >= self.threshold
        self.expired: list[tuple[datetime, int]] = []
        self.recharges = 0
        self.unburned = 0  # spent but not yet taken from the lots
        events = [(at, self.SEND, amount) for at, amount in sends if now <= at < end]
        events += [(at, self.GRANT, lot) for at, lot in granted]
        events += [(lot.expires_at, self.LAPSE, lot) for lot in [*self.lots, *(lot for _, lot in granted)]
                   if lot.expires_at is not None and now <= lot.expires_at < end and can_lapse(lot, wallet.protected)]
        events.sort(key=lambda event: (event[0], event[1]))
        self.events = events

    def run(self, *, stop_when_out: bool) -> None:
        spent = 0
        for at, kind, what in [*self.events, (self.bounds[-1], None, None)]:
            position = self._position(at)
            self._spend(position - spent, spent)
            spent = position
            if stop_when_out and self.runs_out_at is not None:
                return
            if kind == self.SEND:
                self._drop(what, at)
                self.unburned += what
            elif kind == self.LAPSE:
                self._burn()
                if what.remaining > 0:
                    gone, what.remaining = what.remaining, 0
                    self.expired.append((at, gone))
                    self._drop(gone, at)
            elif kind == self.GRANT:
                self._burn()
                self.lots.append(what)
                self.lots.sort(key=burn_key)
                self.available += what.remaining

    def _position(self, at: datetime) -> int:
        """What the days spend from the start of the walk to `at`."""
        day = bisect_right(self.bounds, at) - 1
        if day >= len(self.spending):
            return self.total[-1]
        start, end = self.bounds[day], self.bounds[day + 1]
        return self.total[day] + self.spending[day] * _microseconds(at - start) // _microseconds(end - start)

    def _instant(self, position: int) -> datetime:
        """The first instant by which the days have spent `position` (0 < position <= the walk's total)."""
        day = bisect_left(self.total, position) - 1
        start, end = self.bounds[day], self.bounds[day + 1]
        return start + (end - start) * (position - self.total[day]) // self.spending[day]

    def _spend(self, amount: int, spent: int) -> None:
        """The days' spending of `amount`, from running total `spent` on."""
        if amount <= 0:
            return
        self.unburned += amount
        if self.recharge is not None:  # the walk that counts recharges: each one fires when available dips under
            threshold, credits = self.recharge
            while credits > 0 and self.available - amount < threshold:
                self.recharges += 1
                self.available += credits
            self.available -= amount
            return
        before = self.available
        self.available -= amount
        if self.low_pending and self.available < self.threshold:
            self.low_at, self.low_pending = self._instant(spent + before - self.threshold + 1), False
        if self.runs_out_at is None and self.available <= 0:
            self.runs_out_at = self._instant(spent + before)

    def _drop(self, amount: int, at: datetime) -> None:
        """Available falls by `amount` at one instant (a send, an expiry)."""
        before = self.available
        self.available -= amount
        if self.recharge is not None:
            while self.recharge[1] > 0 and self.available < self.recharge[0]:
                self.recharges += 1
                self.available += self.recharge[1]
            return
        if self.low_pending and self.available < self.threshold:
            self.low_at, self.low_pending = at, False
        if self.runs_out_at is None and self.available <= 0 < before:
            self.runs_out_at = at

    def _burn(self) -> None:
        """Take what was spent since the last burn from the lots, in burn order."""
        for lot in self.lots:
            if not self.unburned:
                return
            taken = min(lot.remaining, self.unburned)
            lot.remaining -= taken
            self.unburned -= taken


def _microseconds(span: timedelta) -> int:
    return span // timedelta(microseconds=1)


# --- reading one account, or a batch -----------------------------------------------------------------------

def forecast(session: Session, account_id: str, *, now: datetime, user_id: str | None = None) -> Forecast:
    """The account's forecast (or, with `user_id`, the forecast of the wallet that user spends from, at that
    user's own spending and scheduled sends). NotFound for an unknown account or user."""
    account = session.get(Account, account_id)
    if account is None:
        raise NotFound(f"No account {account_id}.")
    user = None
    if user_id is not None:
        user = session.get(User, user_id)
        if user is None or user.account_id != account_id or user.deleted_at is not None:
            raise NotFound(f"No user {user_id} in account {account_id}.")
    now = utc(now)
    tz = zone(account.timezone)
    today = local_date(now, tz)
    since = today - timedelta(days=HISTORY_DAYS)
    rows = daily_usage.usage_by_day(session, account_id, since=since, until=today, user_id=user_id)
    by_day: dict[date, int] = defaultdict(int)
    recent: dict[str, dict[int, int]] = {kind: {7: 0, 30: 0, 90: 0} for kind in daily_usage.KINDS}
    for row in rows:
        by_day[row.day] += row.millicredits
        for days in (7, 30, 90):
            if today - timedelta(days=days) <= row.day < today:
                recent[row.kind][days] += row.millicredits
    model = DailyModel(_history(by_day, today, _history_start(account, tz, today)), today - timedelta(days=1))
    wallet = _wallet_of(session, account, user, now)
    sends = scheduled.scheduled_sends(session, [account_id], user_id=user_id, until=now + timedelta(days=HORIZON_DAYS))
    result = project(model, wallet, now=now, timezone=account.timezone, today_spent=by_day.get(today, 0),
                     sends=sends.get(account_id, []))
    result.recent = recent
    return result


def runs_out_by_account(session: Session, accounts: Sequence, *, now: datetime,
                        days: dict[str, dict[date, int]] | None = None,
                        horizon: dict[str, int] | None = None) -> dict[str, datetime | None]:
    """Set-wise, for month-end: each account's runs_out_at (account rows with id, timezone, plan fields,
    balance, held, rollover_protection, low_balance_threshold, credit_hold, status, created_at, cycle_anchor_at).
    A few statements for the whole batch, whatever its size; `days`: what was spent, from at least HISTORY_DAYS
    ago, when the caller read it already; `horizon`: how many days ahead to look for an account (HORIZON_DAYS
    when not given), for a caller that asks only whether it runs out soon."""
    now = utc(now)
    ids = [account.id for account in accounts]
    if not ids:
        return {}
    if days is None:
        days = daily_usage.daily_totals(session, ids, since_by_account={
            account.id: local_date(now, zone(account.timezone)) - timedelta(days=HISTORY_DAYS) for account in accounts})
    open_lots: dict[str, list[_SimLot]] = defaultdict(list)
    for row in session.execute(select(*(lots_table.c[name] for name in _SIM_LOT_COLUMNS))
                               .where(any_of(session, lots_table.c.account_id, ids),
                                                        lots_table.c.remaining > 0)).all():
        open_lots[row.account_id].append(_sim_lot(row))
    sends = scheduled.scheduled_sends(session, ids, until=now + timedelta(days=HORIZON_DAYS))
    answers: dict[str, datetime | None] = {}
    for account in accounts:
        tz = zone(account.timezone)
        today = local_date(now, tz)
        spent = days.get(account.id, {})
        model = DailyModel(_history(spent, today, _history_start(account, tz, today)), today - timedelta(days=1))
        wallet = _Wallet(available=account.balance - account.held, lots=_burn_held(open_lots[account.id], account.held),
                         plan_grants=_plan_grants(account, now), protected=account.rollover_protection,
                         threshold=0, recharge=None)
        answers[account.id] = project(model, wallet, now=now, timezone=account.timezone,
                                      today_spent=spent.get(today, 0), sends=sends.get(account.id, []),
                                      detailed=False, days=(horizon or {}).get(account.id, HORIZON_DAYS)).runs_out_at
    return answers


def _history_start(account, tz, today: date) -> date:
    return max(local_date(utc(account.created_at), tz), today - timedelta(days=HISTORY_DAYS))


def _history(by_day: dict[date, int], today: date, start: date) -> list[int]:
    """Whole days from `start` to yesterday, oldest first (days without spending count as zero)."""
    return [by_day.get(day, 0) for day in _days(start, today)]


@lru_cache(maxsize=1024)
def _days(start: date, end: date) -> tuple[date, ...]:
    """The days from `start` to the day before `end`: the same for most accounts of a batch."""
    return tuple(start + timedelta(days=offset) for offset in range((end - start).days))


_SIM_LOT_COLUMNS = ("id", "account_id", "user_id", "kind", "remaining", "priority", "granted_at", "expires_at")


def _sim_lot(row) -> _SimLot:
    return _SimLot(id=row.id, user_id=row.user_id, kind=row.kind, remaining=row.remaining, priority=row.priority,
                   granted_at=utc(row.granted_at), expires_at=None if row.expires_at is None else utc(row.expires_at))


def _burn_held(lots: list[_SimLot], held: int) -> list[_SimLot]:
    """The lots once the pending holds are settled: what is held is burned in burn order first."""
    burned = []
    for lot in sorted(lots, key=burn_key):
        taken = min(lot.remaining, max(held, 0))
        held -= taken
        if lot.remaining > taken:
            burned.append(_SimLot(**{**vars(lot), "remaining": lot.remaining - taken}))
    return burned


def _wallet_of(session: Session, account: Account, user: User | None, now: datetime) -> _Wallet:
    view = book.balance(session, account.id, now=now)
    own = user is not None and user.role == "user"
    wallet_id = user.id if own else None
    lots = [_SimLot(id=lot.id, user_id=lot.user_id, kind=lot.kind, remaining=lot.remaining, priority=lot.priority,
                    granted_at=utc(lot.granted_at), expires_at=lot.expires_at and utc(lot.expires_at))
            for lot in view.lots if user is None or lot.user_id == wallet_id]
    if user is None:
        available, held = view.available, view.held
    elif own:
        seat = next(seat for seat in view.users if seat.id == user.id)
        available, held = seat.available, seat.held
    else:
        available = view.pool_available
        held = view.held - sum(seat.held for seat in view.users if seat.role == "user")
    recharge = session.get(AutoRecharge, account.id)
    return _Wallet(available=available, lots=_burn_held(lots, held),
                   plan_grants=[] if own else _plan_grants(account, now), protected=account.rollover_protection,
                   threshold=account.low_balance_threshold,
                   recharge=(recharge.threshold, recharge.credits) if recharge is not None and recharge.enabled
                   and recharge.disabled_reason is None and not own else None)


def _plan_grants(account, now: datetime) -> list[tuple[datetime, _SimLot]]:
    """The plan's grants at the cycle ends within the horizon, as month-end will make them."""
    if account.status == "canceled" or account.credit_hold:
        return []
    monthly = account.next_plan_monthly_credits or account.plan_monthly_credits
    amount = monthly * cycle_months(account.plan_cycle)
    if not amount:
        return []
    kind = "rollover" if account.plan_rollover == "fifo_12m" else "plan"
    schedule = _grant_schedule(period_of(now, account.timezone), period_of(utc(account.cycle_anchor_at),
                                                                           account.timezone),
                               account.timezone, account.plan_cycle, kind)
    return [(ended, _SimLot(id=-index - 1, user_id=None, kind=kind, remaining=amount, priority=DEFAULT_PRIORITY[kind],
                            granted_at=ended, expires_at=expires)) for index, (ended, expires) in enumerate(schedule)]


@lru_cache(maxsize=4096)  # keys grow with every month: bounded, so a long-lived process does not keep them all
def _grant_schedule(first: Period, anchor: Period, timezone: str, cycle: str,
                    kind: str) -> tuple[tuple[datetime, datetime | None], ...]:
    """(granted at, expires at) of each grant from the period `first` on: the same for every account of a zone,
    anchor month, cycle and lot kind, so a batch works them out once."""
    grants = []
    period = first
    for _ in range(HORIZON_DAYS // 28):
        ended = period_end(period, timezone)
        if ends_cycle(period, anchor, cycle) and period >= anchor:
            grants.append((ended, default_expiry(kind, ended, timezone, cycle, period_start(anchor, timezone))))
        period = period.shift(1)
    return tuple(grants)
