"""The sender throttle on the real redis-server, hammered by several processes and threads at once."""

import multiprocessing
import random
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import redis

from shared.messaging.sender_throttle import SenderThrottle

pytestmark = pytest.mark.redis

SENDER = "+14155550100"
ROUNDING = 1e-4  # seconds: bookings are whole microseconds


def book_in_process(redis_url: str, rate: float, count: int, seed: int) -> list[tuple[float, float, int]]:
    return book(SenderThrottle(redis.Redis.from_url(redis_url), {"long_code": rate}), count, seed)


def book(throttle: SenderThrottle, count: int, seed: int) -> list[tuple[float, float, int]]:
    """Make `count` bookings of 1-3 segments: each one's slot on this host's wall clock, and its size.

    Redis reads its clock somewhere between the two local readings around the call, so the slot is only
    known to lie between (earliest, latest): a slow or descheduled caller widens the bounds, it never
    shifts them. The local readings are of the wall clock, the one Redis's TIME reads on this host: the monotonic
    clock runs at its own rate while the wall clock is slewed, and a slot read on it could be off by more than
    the rounding between bookings a second apart.
    """
    rng = random.Random(seed)
    slots = []
    for _ in range(count):
        segments = rng.randint(1, 3)
        before = time.time()
        wait = throttle.reserve(SENDER, "long_code", segments)
        slots.append((before + wait, time.time() + wait, segments))
    return slots


def assert_rate_never_exceeded(slots: list[tuple[float, float, int]], rate: float) -> None:
    """In order, each booking starts only after the previous one's segments have had their time,
    even reading the bounds of both in the most favourable way."""
    slots = sorted(slots)
    for (earliest, _, segments), (_, next_latest, _) in zip(slots, slots[1:]):
        assert next_latest - earliest >= segments / rate - ROUNDING, (earliest, segments, next_latest)


@pytest.fixture
def redis_url(embedded_redis):
    redis.Redis.from_url(embedded_redis.url).delete("creditq:sender-throttle:" + SENDER)
    return embedded_redis.url


def test_processes_booking_one_sender_never_exceed_its_rate(redis_url):
    # given 4 worker processes booking 25 sends each on one long code (1 segment/s)
    with multiprocessing.get_context("spawn").Pool(4) as pool:
        results = pool.starmap(book_in_process, [(redis_url, 1.0, 25, seed) for seed in range(4)])

    # then the 100 granted slots, in order, never put two sends closer than their segments allow
    slots = [slot for result in results for slot in result]
    assert len(slots) == 100
    assert_rate_never_exceeded(slots, 1.0)


def test_threads_booking_one_sender_never_exceed_its_rate(redis_url):
    # given 8 threads of one worker sharing one client, booking on a 2 segments/s sender
    throttle = SenderThrottle(redis.Redis.from_url(redis_url), {"long_code": 2.0})
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda seed: book(throttle, 50, seed), range(8)))

    # then the 400 slots keep the rate too
    slots = [slot for result in results for slot in result]
    assert len(slots) == 400
    assert_rate_never_exceeded(slots, 2.0)
