"""Plan advice: which plan (or the credit hold plan, or rollover protection) would have cost least for what the
account really used in its last CYCLES local months, and the saving, in cents from the price list.

Each option is played over those months as the ledger would have run it: its plan credits each month (burned
first), credits carried over where they would have been (a fifo_12m plan or rollover protection keeps unused
plan credits; purchased ones never expire), and whatever was still missing bought in the cheapest listed
buckets of that plan's tier. The current option is the account as it is (its plan, rollover, protection,
credit hold). Options are the price list's subscriptions (each with the account's rollover setting), the credit
hold plan (its monthly fee, every credit bought) and the current plan with rollover protection. The advice
names the cheapest; ties go to the current option, then to the fewer monthly credits.
"""

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime
from math import gcd

from sqlalchemy import select
from sqlalchemy.orm import Session

from shared.billing.calendar import Period, period_of, period_start
from shared.billing.price_list import PriceList, Tier, current_price_list
from shared.db import Database
from shared.errors import NotFound
from shared.ledger.expiry import local_date, utc, zone
from shared.models import Account
from shared.money import format_credits
from shared.reporting import daily_usage

CYCLES = 3

accounts = Account.__table__


@dataclass(frozen=True)
class Cycle:
    period: Period
    used: int  # millicredits spent in the month
    expired: int  # millicredits that lapsed unspent at its end
    unused: int  # of the month's plan credits, what was not spent (rolled over or expired)


@dataclass(frozen=True)
class Option:
    kind: str  # plan | credit_hold | rollover_protection
    monthly_credits: int  # the plan's (0 for credit hold)
    cost_cents: int | None  # over the cycles; None when the price list does not sell the account's current plan

    def as_dict(self) -> dict:
        return {"kind": self.kind, "monthly_credits": format_credits(self.monthly_credits),
                "cost_cents": self.cost_cents}


@dataclass(frozen=True)
class Advice:
    account_id: str
    cycles: list[Cycle]
    rollover_trend: str  # rising | falling | flat: the unused plan credits over the cycles
    current: Option
    recommended: Option
    saving_cents: int  # what the recommended option would have saved over the cycles (0: keep the current one)
    currency: str

    @property
    def changes(self) -> bool:
        return self.recommended != self.current

    def as_dict(self) -> dict:
        return {"account_id": self.account_id, "currency": self.currency, "rollover_trend": self.rollover_trend,
                "changes": self.changes,
                "cycles": [{"period": str(c.period), "used": format_credits(c.used),
                            "expired": format_credits(c.expired), "unused": format_credits(c.unused)}
                           for c in self.cycles],
                "current": self.current.as_dict(), "recommended": self.recommended.as_dict(),
                "saving_cents": self.saving_cents}


def advise(account, cycles: list[Cycle], price_list: PriceList) -> Advice:
    """The advice for an account (a row or model with id, plan_monthly_credits, plan_rollover, rollover_protection,
    credit_hold) from its last cycles, oldest first."""
    plan = account.plan_monthly_credits
    carries = account.plan_rollover == "fifo_12m"
    used = [cycle.used for cycle in cycles]
    if account.credit_hold:
        current = Option("credit_hold", 0, _credit_hold_cost(used, price_list))
    else:
        current = Option("rollover_protection" if account.rollover_protection else "plan", plan,
                         _plan_cost(used, plan, price_list, carries=carries or account.rollover_protection,
                                    protection=account.rollover_protection))
    options = [Option("plan", s.monthly_credits, _plan_cost(used, s.monthly_credits, price_list, carries=carries))
               for s in price_list.subscriptions]
    options.append(Option("credit_hold", 0, _credit_hold_cost(used, price_list)))
    if price_list.rollover_protection_monthly_fee_cents is not None and not account.credit_hold:
        options.append(Option("rollover_protection", plan,
                              _plan_cost(used, plan, price_list, carries=True, protection=True)))
    priced = [option for option in options if option.cost_cents is not None]
    best = min(priced, key=lambda option: (option.cost_cents, option.monthly_credits), default=current)
    if current.cost_cents is not None and current.cost_cents <= best.cost_cents:
        best = current
    saving = 0 if current.cost_cents is None or best == current else current.cost_cents - best.cost_cents
    return Advice(account.id, cycles, _trend([cycle.unused for cycle in cycles], plan), current, best, saving,
                  price_list.currency)


def advice_for(session: Session, account_id: str, *, now: datetime, price_list: PriceList | None = None) -> Advice:
    """The advice over the account's last CYCLES ended local months. NotFound for an unknown account."""
    account = session.get(Account, account_id)
    if account is None:
        raise NotFound(f"No account {account_id}.")
    last = period_of(utc(now), account.timezone).shift(-1)
    return advice_many(session, [account], through={account_id: last}, price_list=price_list)[account_id]


def advice_many(session: Session, accounts: list, *, through: dict[str, Period],
                price_list: PriceList | None = None, spent: dict[str, dict[date, int]] | None = None
                ) -> dict[str, Advice]:
    """Set-wise for a batch (month-end): each account's CYCLES months up to its `through`, from two reads of the
    daily usage for all of them (one, when the caller read what was spent, from at least those months on)."""
    price_list = price_list or current_price_list(session)
    periods = {account.id: [period for offset in range(CYCLES)
                            if (period := through[account.id].shift(offset - CYCLES + 1)) >= created]
               for account in accounts  # the months it existed in (none: too new to advise on)
               for created in [period_of(utc(account.created_at), account.timezone)]}
    since = {account.id: _first_day((periods[account.id] or [through[account.id]])[0], account.timezone)
             for account in accounts}
    ids = [account.id for account in accounts]
    if spent is None:
        spent = daily_usage.daily_totals(session, ids, since_by_account=since)
    lapsed = daily_usage.daily_totals(session, ids, since_by_account=since, kinds=(daily_usage.EXPIRED,))
    answers = {}
    for account in accounts:
        used_by_month, lapsed_by_month = _by_month(spent.get(account.id, {})), _by_month(lapsed.get(account.id, {}))
        cycles = []
        for period in periods[account.id]:
            month = (period.year, period.month)
            used = used_by_month.get(month, 0)
            cycles.append(Cycle(period, used, lapsed_by_month.get(month, 0),
                                max(0, account.plan_monthly_credits - used)))
        answers[account.id] = advise(account, cycles, price_list)
    return answers


def advised_accounts(database: Database, *, now: datetime, batch_size: int = 1000) -> Iterator[Advice]:
    """Every account advised a change over its last CYCLES ended months, in id order; a batch of accounts per
    read-only transaction, each batch advised set-wise."""
    after = ""
    while True:
        with database.read_only() as session:
            rows = list(session.execute(select(accounts).where(accounts.c.id > after).order_by(accounts.c.id)
                                        .limit(batch_size)))
            if not rows:
                return
            advised = advice_many(session, rows, through={
                row.id: period_of(utc(now), row.timezone).shift(-1) for row in rows})
        yield from (advice for advice in advised.values() if advice.changes)
        after = rows[-1].id


def _first_day(period: Period, timezone: str) -> date:
    return local_date(period_start(period, timezone), zone(timezone))


def _by_month(days: dict[date, int]) -> dict[tuple[int, int], int]:
    """Local days summed per (year, month): a period is its local calendar month (shared.billing.calendar)."""
    months: dict[tuple[int, int], int] = {}
    for day, amount in days.items():
        month = (day.year, day.month)
        months[month] = months.get(month, 0) + amount
    return months


def _trend(unused: list[int], plan: int) -> str:
    """Rising or falling when the unused plan credits moved by more than a tenth of the plan over the cycles."""
    if len(unused) < 2 or abs(unused[-1] - unused[0]) * 10 <= plan:
        return "flat"
    return "rising" if unused[-1] > unused[0] else "falling"


def _plan_cost(used: list[int], monthly: int, price_list: PriceList, *, carries: bool,
               protection: bool = False) -> int | None:
    """The months played on a plan of `monthly` credits; None when the price list does not sell it."""
    subscription = price_list.subscription(monthly)
    if subscription is None:
        return None
    fee = subscription.monthly_price_cents + (price_list.rollover_protection_monthly_fee_cents or 0) * protection
    tier = price_list.tier_for(monthly)
    cost, carried, bought = 0, 0, 0
    for spent in used:
        cost += fee
        from_plan = min(spent, monthly + carried)
        left = monthly + carried - from_plan
        carried = left if carries else 0
        short = spent - from_plan - min(bought, spent - from_plan)
        bought -= min(bought, spent - from_plan)
        if short > 0:
            price, credits = _cheapest_cover(tier, short)
            cost += price
            bought += credits - short
    return cost


def _credit_hold_cost(used: list[int], price_list: PriceList) -> int:
    """Every credit bought (at the first tier: credit hold grants no plan credits), the monthly fee paid."""
    tier = price_list.tier_for(0)
    cost, bought = 0, 0
    for spent in used:
        cost += price_list.credit_hold_monthly_fee_cents
        short = spent - min(bought, spent)
        bought -= min(bought, spent)
        if short > 0:
            price, credits = _cheapest_cover(tier, short)
            cost += price
            bought += credits - short
    return cost


def _cheapest_cover(tier: Tier, needed: int) -> tuple[int, int]:
    """(price in cents, credits) of the cheapest set of the tier's buckets that holds at least `needed`: a table
    per bucket list, in steps of the buckets' common divisor, grown as far as asked and kept."""
    buckets = tuple(sorted(tier.buckets.items()))
    step = gcd(*(credits for credits, _ in buckets))
    steps = -(-needed // step)
    table = _COVERS.setdefault(buckets, [(0, 0)])
    while len(table) <= steps:
        at = len(table)
        table.append(min((table[max(0, at - credits // step)][0] + price,
                          table[max(0, at - credits // step)][1] + credits) for credits, price in buckets))
    return table[steps]


_COVERS: dict[tuple[tuple[int, int], ...], list[tuple[int, int]]] = {}
