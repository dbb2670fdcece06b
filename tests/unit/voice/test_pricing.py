"""What a call costs and what a hold covers: started minutes, whole minutes within what an account has."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.messaging.rates import default_rate_card
from shared.voice.broadcasts import estimate_broadcast
from shared.voice.pricing import CallPrice, call_price, started_minutes


@pytest.mark.parametrize("seconds, minutes", [(0, 0), (1, 1), (59, 1), (60, 1), (61, 2), (600, 10), (601, 11)])
def test_started_minutes_are_twilios_billed_minutes(seconds, minutes):
    assert started_minutes(seconds) == minutes


def test_a_prepaid_account_with_three_credits_covers_one_minute_at_two_credits():
    # given the outgoing rate of the bundled card
    price = call_price(default_rate_card(), "+14155550100", item="call_outgoing")

    # when 3 credits are available for a call of up to 10 minutes
    minutes = price.minutes_covered(3000, 10)

    # then the hold covers 1 minute: 2 credits, 60 seconds
    assert (price.per_minute, minutes, price.cost(minutes)) == (2000, 1, 2000)


def test_a_bridge_prices_both_legs_and_detection_is_flat_per_number():
    bridge = call_price(default_rate_card(), "+14155550100", item="call_outgoing", legs=2)
    detected = call_price(default_rate_card(), "+14155550100", item="voice_broadcast", machine_detection=True)

    assert bridge.charge(90, placed=True) == (2, 8000)
    assert detected.charge(61, placed=True) == (2, 4500)
    assert detected.charge(0, placed=True) == (0, 500)  # called, busy: the detection charge only
    assert detected.charge(0, placed=False) == (0, 0)  # never placed: nothing


@given(available=st.integers(min_value=-10_000, max_value=10_000_000), wanted=st.integers(min_value=1, max_value=240),
       per_minute=st.integers(min_value=1, max_value=10_000), flat=st.integers(min_value=0, max_value=1000))
def test_a_hold_never_exceeds_what_is_available_nor_the_minutes_asked(available, wanted, per_minute, flat):
    price = CallPrice(per_minute=per_minute, flat=flat)

    minutes = price.minutes_covered(available, wanted)

    assert 0 <= minutes <= wanted
    if minutes:
        assert price.cost(minutes) <= available
    if minutes < wanted:
        assert price.cost(minutes + 1) > available


def test_a_postpaid_account_is_held_for_every_minute_asked():
    assert CallPrice(per_minute=2000, flat=0).minutes_covered(None, 10) == 10


def test_a_broadcast_estimate_is_numbers_times_minutes_times_rate_plus_detection():
    estimate = estimate_broadcast(500, 2, True, rate_card=default_rate_card())

    assert estimate.credits == 500 * (2 * 2000 + 500)
    assert estimate.as_dict()["credits"] == "2250"
