"""The billing calendar: local months, their end instants, cycles; across zones, DST and leap years."""

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.billing.calendar import Period, ends_cycle, last_ended, period_end, period_of, period_start

ZONES = ["UTC", "Pacific/Auckland", "America/Los_Angeles", "Europe/Berlin", "Australia/Lord_Howe",
         "America/Santiago", "Asia/Kolkata", "Pacific/Chatham", "America/St_Johns"]
periods = st.builds(Period, st.integers(1971, 2100), st.integers(1, 12))
zones = st.sampled_from(ZONES)


def test_auckland_and_los_angeles_end_august_at_different_instants():
    august = Period(2021, 8)

    auckland, los_angeles = period_end(august, "Pacific/Auckland"), period_end(august, "America/Los_Angeles")

    assert auckland == datetime(2021, 8, 31, 12, tzinfo=UTC)  # NZST, UTC+12
    assert los_angeles == datetime(2021, 9, 1, 7, tzinfo=UTC)  # PDT, UTC-7
    assert los_angeles - auckland == timedelta(hours=19)


def test_a_month_with_a_dst_change_is_an_hour_shorter_or_longer():
    march, november = Period(2021, 3), Period(2021, 11)
    tz = "America/Los_Angeles"

    assert period_end(march, tz) - period_start(march, tz) == timedelta(days=31, hours=-1)
    assert period_end(november, tz) - period_start(november, tz) == timedelta(days=30, hours=1)


def test_february_of_a_leap_year_has_29_days():
    assert period_end(Period(2024, 2), "UTC") - period_start(Period(2024, 2), "UTC") == timedelta(days=29)
    assert period_end(Period(2023, 2), "UTC") - period_start(Period(2023, 2), "UTC") == timedelta(days=28)


def test_every_month_starts_on_its_first_local_day_in_every_zone():
    # zones with half-hour and 30-minute DST (Lord Howe), midnight changes (Santiago) included
    for tz in ZONES:
        for month in range(1, 13):
            start = period_start(Period(2022, month), tz)
            local = start.astimezone(ZoneInfo(tz))
            assert (local.year, local.month, local.day) == (2022, month, 1)
            assert local.hour in (0, 1)


@pytest.mark.parametrize(("text", "period"), [("2021-08", Period(2021, 8)), (" 2026-11 ", Period(2026, 11))])
def test_periods_parse_from_yyyy_mm(text, period):
    assert Period.parse(text) == period
    assert str(period) == text.strip()


@pytest.mark.parametrize("text", ["2021-13", "2021-00", "21-08", "2021/08", "", "August", "２０２６-１１"])
def test_bad_periods_are_refused(text):
    with pytest.raises(ValueError, match="YYYY-MM"):
        Period.parse(text)


@pytest.mark.parametrize("text", ["9999-12", "9000-01", "0001-01", "1969-12"])
def test_a_month_outside_the_instants_the_api_takes_is_refused_before_any_account_is_read(text):
    # a month past 9999-11 has no end a date can hold: every account failed on it
    with pytest.raises(ValueError, match="from 1970-01 to 8999-12"):
        Period.parse(text)


def test_last_ended_is_the_previous_local_month():
    instant = datetime(2021, 8, 31, 13, tzinfo=UTC)

    assert last_ended(instant, "Pacific/Auckland") == Period(2021, 8)
    assert last_ended(instant, "America/Los_Angeles") == Period(2021, 7)


def test_quarterly_and_yearly_cycles_count_from_the_anchor_month():
    anchor = Period(2021, 2)

    quarter_ends = [p for p in (Period(2021, m) for m in range(1, 13)) if ends_cycle(p, anchor, "quarterly")]
    year_ends = [p for p in (anchor.shift(i) for i in range(36)) if ends_cycle(p, anchor, "yearly")]

    assert quarter_ends == [Period(2021, 1), Period(2021, 4), Period(2021, 7), Period(2021, 10)]
    assert year_ends == [Period(2022, 1), Period(2023, 1), Period(2024, 1)]
    assert all(ends_cycle(anchor.shift(i), anchor, "monthly") for i in range(24))


@given(periods, zones)
def test_a_period_contains_its_start_and_the_instant_before_its_end(period, tz):
    start, end = period_start(period, tz), period_end(period, tz)

    assert period_of(start, tz) == period
    assert period_of(end - timedelta(microseconds=1), tz) == period
    assert period_of(end, tz) == period.shift(1)
    assert timedelta(days=27) < end - start < timedelta(days=32)


@given(periods, zones)
def test_consecutive_periods_are_contiguous(period, tz):
    assert period_end(period, tz) == period_start(period.shift(1), tz)


@given(periods, st.integers(-40, 40))
def test_shift_moves_by_whole_months(period, months):
    assert period.shift(months).shift(-months) == period
    assert period.shift(months).index - period.index == months
    assert Period.parse(str(period)) == period


@given(st.datetimes(min_value=datetime(1971, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)), zones)
def test_every_instant_is_in_exactly_the_period_of_its_local_date(instant, tz):
    period = period_of(instant, tz)

    assert period_start(period, tz) <= instant < period_end(period, tz)
