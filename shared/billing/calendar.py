"""The billing calendar, pure: which local month an instant falls in, when it ends, when a cycle ends.

A period is a calendar month in the account's time zone ("2021-08"). It ends at the first local
midnight of the next month, as a UTC instant: Pacific/Auckland ends its months about 20 hours
before America/Los_Angeles. A midnight that DST skips maps to the first instant after it
(expiry.local_midnight), so every period is contiguous with the next.

Cycles are counted from the account's anchor month, the local month it was created in: a quarterly
account created in February has cycles Feb-Apr, May-Jul, ...; a yearly one Feb-Jan. This is how a
card subscription renews (on its start date), and it keeps month-end work spread across the year.
A plan grants the whole cycle's credits (monthly credits x months in the cycle) when a cycle starts.
"""

import functools
import re
from dataclasses import dataclass
from datetime import date, datetime

from shared.ledger.expiry import CYCLE_MONTHS, local_midnight, utc, zone

_PERIOD = re.compile(r"^([0-9]{4})-([0-9]{2})$")  # ASCII digits: \d would take "２０２６-１１" too


@dataclass(frozen=True, order=True)
class Period:
    year: int
    month: int

    @classmethod
    def parse(cls, text: str) -> "Period":
        """'2021-08' -> Period(2021, 8); ValueError with a message fit for one line otherwise. From 1970-01 to
        8999-12, the instants the API takes: a month past 9999-11 has no end a date can hold."""
        match = _PERIOD.match(text.strip()) if isinstance(text, str) else None
        if match is None or not 1 <= int(match[2]) <= 12:
            raise ValueError(f"period {text!r} must be a month written YYYY-MM, such as 2026-11")
        if not 1970 <= int(match[1]) <= 8999:
            raise ValueError(f"period {text!r} must be a month from 1970-01 to 8999-12")
        return cls(int(match[1]), int(match[2]))

    @classmethod
    def from_index(cls, index: int) -> "Period":
        year, month = divmod(index, 12)
        return cls(year, month + 1)

    @property
    def index(self) -> int:
        """Months since year 0: consecutive periods have consecutive indexes."""
        return self.year * 12 + self.month - 1

    def shift(self, months: int) -> "Period":
        return Period.from_index(self.index + months)

    def __str__(self) -> str:
        return f"{self.year:04d}-{self.month:02d}"


def period_of(instant: datetime, tz_name: str) -> Period:
    """The local month `instant` falls in."""
    local = utc(instant).astimezone(zone(tz_name))
    return Period(local.year, local.month)


@functools.lru_cache(maxsize=4096)
def period_start(period: Period, tz_name: str) -> datetime:
    """The first local midnight of the month, as an aware UTC instant. Remembered: month-end and the forecasts ask it
    for the same few months and time zones for every account of a batch."""
    return local_midnight(date(period.year, period.month, 1), zone(tz_name))


def period_end(period: Period, tz_name: str) -> datetime:
    """The instant the month ends: the next month's first local midnight (exclusive end)."""
    return period_start(period.shift(1), tz_name)


def last_ended(now: datetime, tz_name: str) -> Period:
    """The latest period whose end is at or before `now`."""
    return period_of(now, tz_name).shift(-1)


def ends_cycle(period: Period, anchor: Period, cycle: str) -> bool:
    """Whether a cycle (monthly, quarterly, yearly) counted from `anchor` ends with `period`."""
    return (period.index - anchor.index + 1) % CYCLE_MONTHS[cycle] == 0


def cycle_months(cycle: str) -> int:
    return CYCLE_MONTHS[cycle]
