"""Per-sender throughput booked in Redis (fakeredis with Lua): the slots a sender hands out respect its rate."""

import time

import fakeredis
import pytest

from shared.config import ConfigError
from shared.messaging.sender_throttle import DEFAULT_RATES, KEY_PREFIX, SenderThrottle, rates_from_environment

SENDER = "+14155550100"


class Clock:
    """Redis's clock (fakeredis reads time.time), standing still until a test moves it: no test waits or races."""

    def __init__(self):
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock(monkeypatch) -> Clock:
    clock = Clock()
    monkeypatch.setattr(time, "time", clock)
    return clock


@pytest.fixture
def redis_client(clock):
    return fakeredis.FakeRedis()


def test_an_idle_sender_sends_now(redis_client):
    assert SenderThrottle(redis_client).reserve(SENDER, "long_code", 1) == 0.0


def test_a_long_code_books_one_segment_per_second(redis_client):
    throttle = SenderThrottle(redis_client)

    # when a 1-segment, a 3-segment and another message are booked back to back
    waits = [throttle.reserve(SENDER, "long_code", segments) for segments in (1, 3, 1)]

    # then each starts after the previous one's segments have had their seconds
    assert waits[0] == 0.0
    assert waits[1] == pytest.approx(1.0)
    assert waits[2] == pytest.approx(4.0)


@pytest.mark.parametrize(("sender_type", "spacing"), [("toll_free", 1 / 3), ("short_code", 1 / 100)])
def test_each_sender_type_has_its_rate(redis_client, sender_type, spacing):
    throttle = SenderThrottle(redis_client)

    waits = [throttle.reserve(SENDER, sender_type, 1) for _ in range(4)]

    assert waits == pytest.approx([0.0, spacing, 2 * spacing, 3 * spacing], abs=1e-5)  # microsecond slots


def test_senders_do_not_share_throughput(redis_client):
    throttle = SenderThrottle(redis_client)
    throttle.reserve(SENDER, "long_code", 10)

    assert throttle.reserve("+14155550199", "long_code", 1) == 0.0


def test_a_sender_is_free_again_once_its_booked_time_has_passed(redis_client, clock):
    # given a sender (50 segments/s) whose two segments occupy it for 40 ms
    throttle = SenderThrottle(redis_client, {"long_code": 50})
    throttle.reserve(SENDER, "long_code", 2)

    clock.advance(0.1)

    assert throttle.reserve(SENDER, "long_code", 1) == 0.0


def test_bookings_expire_from_redis_once_they_are_past(redis_client):
    SenderThrottle(redis_client).reserve(SENDER, "long_code", 5)

    ttl_ms = redis_client.pttl(KEY_PREFIX + SENDER)

    assert 5_000 < ttl_ms <= 6_000


def test_configured_rates_replace_the_defaults(redis_client):
    throttle = SenderThrottle(redis_client, {**DEFAULT_RATES, "long_code": 4})
    throttle.reserve(SENDER, "long_code", 1)

    assert throttle.reserve(SENDER, "long_code", 1) == pytest.approx(0.25, abs=1e-6)


@pytest.mark.parametrize(("sender_type", "segments"), [("carrier_pigeon", 1), ("long_code", 0)])
def test_bad_requests_are_refused_without_booking(redis_client, sender_type, segments):
    throttle = SenderThrottle(redis_client)

    with pytest.raises(ValueError):
        throttle.reserve(SENDER, sender_type, segments)

    assert throttle.reserve(SENDER, "long_code", 1) == 0.0


def test_a_rate_must_be_positive(redis_client):
    with pytest.raises(ValueError):
        SenderThrottle(redis_client, {"long_code": 0})


def test_rates_come_from_the_environment():
    rates = rates_from_environment({"CREDITQ_SENDER_RATES": " toll_free=25 , alphanumeric=10"})

    assert rates == {"long_code": 1.0, "toll_free": 25.0, "short_code": 100.0, "alphanumeric": 10.0}
    assert rates_from_environment({}) == DEFAULT_RATES


@pytest.mark.parametrize("raw", ["toll_free", "toll_free=fast", "toll_free=0", "=3", "long_code=-1", "x=inf"])
def test_bad_rates_in_the_environment_stop_start_up(raw):
    with pytest.raises(ConfigError, match="CREDITQ_SENDER_RATES"):
        rates_from_environment({"CREDITQ_SENDER_RATES": raw})
