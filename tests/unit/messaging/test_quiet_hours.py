"""Quiet hours under a controlled clock: every answer is computed from an explicit instant."""

from datetime import UTC, datetime, time
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.errors import ValidationFailed
from shared.messaging.quiet_hours import Window, next_allowed, parse_window, zones

NEW_YORK = (ZoneInfo("America/New_York"),)
DEFAULT = Window()


def at(*args) -> datetime:
    return datetime(*args, tzinfo=UTC)


def test_inside_the_window_a_message_goes_now():
    now = at(2026, 11, 10, 15, 0)  # 10:00 in New York
    assert next_allowed(now, NEW_YORK, DEFAULT) == now


def test_before_the_window_it_waits_for_eight_local():
    # given 06:30 in New York (EST, UTC-5) / then 08:00 EST the same day
    assert next_allowed(at(2026, 11, 10, 11, 30), NEW_YORK, DEFAULT) == at(2026, 11, 10, 13, 0)


def test_after_the_window_it_waits_for_the_next_morning():
    # given 21:00 exactly (the end is exclusive) / then 08:00 the next day
    assert next_allowed(at(2026, 11, 11, 2, 0), NEW_YORK, DEFAULT) == at(2026, 11, 11, 13, 0)


def test_the_night_before_spring_forward_waits_for_eight_daylight_time():
    # DST starts 2026-03-08 02:00 in New York: 08:00 that morning is EDT (UTC-4), not EST
    assert next_allowed(at(2026, 3, 8, 5, 0), NEW_YORK, DEFAULT) == at(2026, 3, 8, 12, 0)


def test_the_night_before_fall_back_waits_for_eight_standard_time():
    # DST ends 2026-11-01 02:00: 08:00 that morning is EST (UTC-5)
    assert next_allowed(at(2026, 11, 1, 5, 0), NEW_YORK, DEFAULT) == at(2026, 11, 1, 13, 0)


def test_an_opening_inside_the_dst_gap_lands_after_the_gap():
    window = Window(time(2, 30), time(21, 0))
    opening = next_allowed(at(2026, 3, 8, 5, 0), NEW_YORK, window)  # 00:00 EST
    assert opening.astimezone(NEW_YORK[0]).time() >= time(3, 0)
    assert opening.astimezone(NEW_YORK[0]).date().day == 8


def test_a_number_in_several_zones_waits_until_every_zone_is_in_hours():
    # 12:00 UTC is 08:00 EDT in New York but 05:00 PDT in Los Angeles (June)
    zones_us = (ZoneInfo("America/New_York"), ZoneInfo("America/Los_Angeles"))
    assert next_allowed(at(2026, 6, 1, 12, 0), zones_us, DEFAULT) == at(2026, 6, 1, 15, 0)


def test_a_window_across_midnight():
    window = Window(time(22, 0), time(6, 0))
    assert next_allowed(at(2026, 11, 10, 4, 0), NEW_YORK, window) == at(2026, 11, 10, 4, 0)  # 23:00 EST
    assert next_allowed(at(2026, 11, 10, 15, 0), NEW_YORK, window) == at(2026, 11, 11, 3, 0)


@given(st.datetimes(min_value=datetime(2020, 1, 1), max_value=datetime(2030, 1, 1), timezones=st.just(UTC)),
       st.sampled_from(["America/New_York", "Europe/London", "Australia/Lord_Howe", "Asia/Kolkata",
                        "America/Los_Angeles"]))
def test_the_answer_is_never_earlier_than_now_and_always_inside_the_window(now, zone_name):
    zone = (ZoneInfo(zone_name),)
    allowed = next_allowed(now, zone, DEFAULT)
    assert allowed >= now
    assert DEFAULT.contains(allowed.astimezone(zone[0]).time())


def test_unknown_zones_fall_back_to_the_accounts_zone():
    assert zones((), "Europe/Paris") == (ZoneInfo("Europe/Paris"),)


@pytest.mark.parametrize("raw", [{"start": "25:00"}, {"end": "9pm"}, "8-21", {"from": "08:00"}])
def test_a_bad_window_is_refused_naming_the_field(raw):
    with pytest.raises(ValidationFailed) as refused:
        parse_window(raw)
    assert any(field.startswith("quiet_hours") for field in refused.value.errors)


def test_equal_start_and_end_turn_quiet_hours_off():
    window = parse_window({"start": "00:00", "end": "00:00"})
    assert next_allowed(at(2026, 11, 10, 8, 0), NEW_YORK, window) == at(2026, 11, 10, 8, 0)  # 03:00 local


def test_the_default_window_is_eight_to_nine():
    assert parse_window(None).as_dict() == {"start": "08:00", "end": "21:00"}
