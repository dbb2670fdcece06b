"""Expiry instants: local midnights in the account's zone, across DST, leap years and month ends."""

from datetime import date, datetime, timezone
from zoneinfo import ZoneInfo

import pytest

from shared.ledger.expiry import (
    add_months,
    cycle_end,
    default_expiry,
    end_of_month,
    expires_after_months,
    rollover_expiry,
    zone,
)

UTC = timezone.utc


def test_rollover_granted_september_first_expires_at_the_end_of_august_31_next_year_local():
    granted = datetime(2020, 9, 1, 0, 0, tzinfo=ZoneInfo("America/New_York"))

    expires = rollover_expiry(granted, "America/New_York")

    assert expires == datetime(2021, 9, 1, 4, 0, tzinfo=UTC)  # 2021-09-01T00:00-04:00
    assert expires.tzinfo == UTC
    assert expires.astimezone(ZoneInfo("America/New_York")) == datetime(2021, 9, 1, tzinfo=ZoneInfo("America/New_York"))


def test_the_local_date_decides_not_the_utc_date():
    # 2020-09-01T02:00Z is still August 31 in New York.
    assert rollover_expiry(datetime(2020, 9, 1, 2, 0, tzinfo=UTC), "America/New_York") == \
        datetime(2021, 8, 31, 4, 0, tzinfo=UTC)
    # ...and already September 1 in Tokyo, whose midnight is 15:00Z the day before.
    assert rollover_expiry(datetime(2020, 8, 31, 16, 0, tzinfo=UTC), "Asia/Tokyo") == \
        datetime(2021, 8, 31, 15, 0, tzinfo=UTC)


@pytest.mark.parametrize(("day", "months", "expected"), [
    (date(2020, 2, 29), 12, date(2021, 3, 1)),   # leap day: lasts through Feb 28, no day lost
    (date(2019, 2, 28), 12, date(2020, 2, 28)),  # into a leap year: the same date
    (date(2021, 1, 31), 1, date(2021, 3, 1)),    # no Feb 31
    (date(2024, 1, 31), 1, date(2024, 3, 1)),
    (date(2021, 1, 30), 1, date(2021, 3, 1)),
    (date(2021, 1, 28), 1, date(2021, 2, 28)),
    (date(2021, 11, 30), 3, date(2022, 3, 1)),    # no Feb 30
    (date(2021, 12, 15), 1, date(2022, 1, 15)),  # across the year
    (date(2021, 5, 31), 12, date(2022, 5, 31)),
])
def test_add_months_rolls_a_missing_day_to_the_first_of_the_next_month(day, months, expected):
    assert add_months(day, months) == expected


def test_midnight_follows_daylight_saving_time():
    # London: summer midnight is 23:00Z the day before; winter midnight is 00:00Z.
    assert rollover_expiry(datetime(2020, 7, 1, 12, tzinfo=UTC), "Europe/London") == datetime(2021, 6, 30, 23, tzinfo=UTC)
    assert rollover_expiry(datetime(2020, 1, 10, 12, tzinfo=UTC), "Europe/London") == datetime(2021, 1, 10, tzinfo=UTC)


def test_a_midnight_skipped_by_dst_maps_to_the_first_instant_of_that_day():
    # Sao Paulo moved clocks from 00:00 to 01:00 on 2018-11-04.
    expires = expires_after_months(datetime(2018, 10, 4, 12, tzinfo=UTC), "America/Sao_Paulo", 1)

    local = expires.astimezone(ZoneInfo("America/Sao_Paulo"))
    assert (local.date(), local.hour) == (date(2018, 11, 4), 1)


@pytest.mark.parametrize(("cycle", "expected"), [
    ("monthly", datetime(2021, 2, 1, 5, tzinfo=UTC)),
    ("quarterly", datetime(2021, 4, 1, 4, tzinfo=UTC)),  # EDT by April
    ("yearly", datetime(2022, 1, 1, 5, tzinfo=UTC)),
])
def test_plan_credits_expire_when_their_cycle_ends(cycle, expected):
    cycle_start = datetime(2021, 1, 1, tzinfo=ZoneInfo("America/New_York"))

    assert cycle_end(cycle_start, cycle_start, "America/New_York", cycle) == expected


@pytest.mark.parametrize(("cycle", "expected"), [
    ("monthly", datetime(2026, 12, 1, 5, tzinfo=UTC)),
    ("quarterly", datetime(2027, 2, 1, 5, tzinfo=UTC)),
    ("yearly", datetime(2027, 11, 1, 4, tzinfo=UTC)),
])
def test_plan_credits_granted_mid_month_with_the_plan_expire_when_the_first_cycle_ends(cycle, expected):
    # given an account created on 2026-11-10 in New York, its first plan credits granted then
    created = datetime(2026, 11, 10, 15, tzinfo=UTC)

    # then they expire when the first cycle, counted from November, ends: not a month after the grant
    assert cycle_end(created, created, "America/New_York", cycle) == expected


def test_a_later_grant_expires_with_the_cycle_it_falls_in():
    created = datetime(2026, 11, 10, 15, tzinfo=UTC)
    in_the_second_quarter = datetime(2027, 3, 20, tzinfo=UTC)

    assert cycle_end(in_the_second_quarter, created, "America/New_York", "quarterly") == datetime(2027, 5, 1, 4, tzinfo=UTC)


def test_default_expiry_by_kind():
    granted = datetime(2020, 9, 1, 4, tzinfo=UTC)
    created = datetime(2020, 8, 15, tzinfo=UTC)
    assert default_expiry("plan", granted, "America/New_York", "monthly", created) == datetime(2020, 10, 1, 4, tzinfo=UTC)
    assert default_expiry("rollover", granted, "America/New_York", "monthly", created) == datetime(2021, 9, 1, 4,
                                                                                                   tzinfo=UTC)
    assert default_expiry("purchase", granted, "America/New_York", "monthly", created) is None
    assert default_expiry("bonus", granted, "America/New_York", "monthly", created) is None


def test_end_of_month_is_local():
    # 2021-01-31T23:30Z is already February 1 in Tokyo: its month ends 2021-03-01T00:00+09:00.
    assert end_of_month(datetime(2021, 1, 31, 23, 30, tzinfo=UTC), "Asia/Tokyo") == datetime(2021, 2, 28, 15, tzinfo=UTC)
    assert end_of_month(datetime(2020, 12, 15, tzinfo=UTC), "UTC") == datetime(2021, 1, 1, tzinfo=UTC)
    assert end_of_month(datetime(2020, 2, 10, tzinfo=UTC), "UTC") == datetime(2020, 3, 1, tzinfo=UTC)


def test_an_unknown_zone_is_a_value_error():
    with pytest.raises(ValueError, match="IANA"):
        zone("Mars/Olympus_Mons")
