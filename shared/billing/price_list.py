"""What credits cost in money: buckets of credits with a price per plan tier, in integer cents.

The account's tier is the highest one whose `min_monthly_credits` its plan reaches. Only listed
buckets can be bought (by hand or by auto-recharge), so every price is a number someone chose.
`subscriptions` are the plans sold, each with its monthly price, and rollover protection has a monthly
price of its own: plan advice (shared.billing.advice) compares them, never figures of its own.

Processes use the newest price list version in the database (`current_price_list`, shared.price_versions):
`creditq db upgrade` loads price_list.json when it changed, `creditq rates publish --price-list FILE` adds one.
"""

import json
from dataclasses import dataclass
from functools import cache, cached_property
from pathlib import Path

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from shared import price_versions
from shared.config import ConfigError
from shared.errors import ValidationFailed
from shared.money import format_credits, parse_credits
from shared.price_versions import Kind

BUNDLED_PRICE_LIST = Path(__file__).parent / "price_list.json"


@dataclass(frozen=True)
class Tier:
    name: str
    min_monthly_credits: int  # millicredits
    buckets: dict[int, int]  # millicredits -> price in cents
    debt_millicents_per_credit: int  # what a credit of negative balance is billed at, in thousandths of a cent


@dataclass(frozen=True)
class Subscription:
    monthly_credits: int  # millicredits
    monthly_price_cents: int


@dataclass(frozen=True)
class PriceList:
    currency: str
    credit_hold_monthly_fee_cents: int
    shared_short_code_monthly_fee_cents: int  # an account with a keyword on the shared short code, per month
    tiers: tuple[Tier, ...]  # by min_monthly_credits ascending
    subscriptions: tuple[Subscription, ...] = ()  # the plans sold, by monthly_credits ascending
    rollover_protection_monthly_fee_cents: int | None = None  # None: not sold

    def subscription(self, monthly_credits: int) -> Subscription | None:
        """The plan sold with these monthly credits (None: not one the price list sells)."""
        return self._subscriptions.get(monthly_credits)

    @cached_property
    def _subscriptions(self) -> dict[int, Subscription]:
        """By monthly credits: month-end's advice prices every plan for every account."""
        return {subscription.monthly_credits: subscription for subscription in self.subscriptions}

    def tier_for(self, plan_monthly_credits: int) -> Tier:
        return [t for t in self.tiers if t.min_monthly_credits <= plan_monthly_credits][-1]

    def price_cents(self, plan_monthly_credits: int, credits_mc: int, *, field: str = "credits") -> int:
        """The price of a bucket on this plan; anything but a listed bucket is a ValidationFailed naming them."""
        tier = self.tier_for(plan_monthly_credits)
        if credits_mc not in tier.buckets:
            offered = ", ".join(format_credits(c) for c in sorted(tier.buckets))
            reason = f"must be one of the {tier.name} plan's buckets: {offered}"
            raise ValidationFailed(f"{field} {reason}", errors={field: reason})
        return tier.buckets[credits_mc]

    def debt_cents(self, plan_monthly_credits: int, debt_mc: int) -> int:
        """A month's debt in cents at the plan tier's rate, rounded up once, for the whole bill."""
        rate = self.tier_for(plan_monthly_credits).debt_millicents_per_credit
        return -(-debt_mc * rate // 1_000_000)


def parse_price_list(data: dict) -> PriceList:
    tiers = []
    for plan in data["plans"]:
        buckets = {parse_credits(b["credits"]): _cents(b["price_cents"]) for b in plan["buckets"]}
        tiers.append(Tier(plan["name"], parse_credits(plan["min_monthly_credits"]), buckets,
                          _thousandths(plan["debt_cents_per_credit"])))
    tiers.sort(key=lambda t: t.min_monthly_credits)
    if not tiers or tiers[0].min_monthly_credits != 0:
        raise ValueError("the price list needs a tier starting at 0 monthly credits")
    subscriptions = sorted((Subscription(parse_credits(s["monthly_credits"]), _cents(s["monthly_price_cents"]))
                            for s in data.get("subscriptions", ())), key=lambda s: s.monthly_credits)
    protection = data.get("rollover_protection_monthly_fee_cents")
    return PriceList(data["currency"], _cents(data["credit_hold_monthly_fee_cents"]),
                     _cents(data["shared_short_code_monthly_fee_cents"]), tuple(tiers), tuple(subscriptions),
                     None if protection is None else _cents(protection))


def _thousandths(value: object) -> int:
    """'4.5' (cents) -> 4500: decimal strings with at most three places, like credits, never floats."""
    if not isinstance(value, str):
        raise ValueError(f"debt_cents_per_credit is a decimal string such as \"4.5\", not {value!r}")
    return parse_credits(value)


def _cents(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"prices are whole cents, not {value!r}")
    return value


def _checked(data: object, source: str, _version: int | None) -> PriceList:
    """parse_price_list with any problem as a one-line ConfigError naming where the document came from."""
    try:
        return parse_price_list(data)
    except (KeyError, TypeError, ValueError, AttributeError) as error:
        reason = f"missing key {error}" if isinstance(error, KeyError) else str(error)
        raise ConfigError(f"price list {source}: {reason}") from None


PRICE_LISTS = Kind("price_list", parse=_checked, file=lambda: str(BUNDLED_PRICE_LIST))


def current_price_list(bind: Engine | Session) -> PriceList:
    """The newest price list version as this process sees it (at most CHECK_SECONDS old: shared.price_versions)."""
    return price_versions.current(bind, PRICE_LISTS)


@cache
def default_price_list() -> PriceList:
    """The bundled file's price list, read once: what tests price with."""
    return parse_price_list(json.loads(BUNDLED_PRICE_LIST.read_text(encoding="utf-8")))
