"""dramatiq's heartbeats and delayed jobs' etas on Redis's clock: processes whose own clocks are minutes apart
still agree on which worker is alive and when a delayed job is due."""

import time

import dramatiq
import dramatiq.common
import fakeredis
import pytest
import redis

from shared.broker import make_broker
from shared.redis_clock import RedisClock, RedisClockEtas

TWO_MINUTES_MS = 120_000


class RedisOff:
    """Stands for a Redis server whose clock is `seconds` ahead of this process's (behind when negative)."""

    def __init__(self, seconds: float):
        self.seconds = seconds
        self.asked = 0

    def time(self) -> tuple[int, int]:
        self.asked += 1
        now = time.time() + self.seconds
        return int(now), int(now % 1 * 1_000_000)


class RedisAway:
    def time(self):
        raise redis.ConnectionError("no Redis here")


def local_millis() -> int:
    return round(time.time() * 1000)


def test_the_clock_is_redis_time_measured_once_per_refresh():
    # given a Redis whose clock is two minutes ahead of this process's
    server = RedisOff(120)
    clock = RedisClock(server, refresh_seconds=60)

    # when the time is read many times
    readings = [clock.millis() - local_millis() for _ in range(100)]

    # then every reading is Redis's time, and Redis was asked once
    assert all(abs(reading - TWO_MINUTES_MS) < 50 for reading in readings)
    assert server.asked == 1


def test_a_redis_that_does_not_answer_leaves_the_last_offset():
    clock = RedisClock(RedisAway(), refresh_seconds=0)

    assert abs(clock.millis() - local_millis()) < 50


REDIS_TIME = time.time  # the test's own clock stands for Redis's; each process's is set off it


class RedisServerTime:
    """The shared Redis's TIME, whatever the clock of the process asking."""

    def time(self) -> tuple[int, int]:
        now = REDIS_TIME()
        return int(now), int(now % 1 * 1_000_000)


@pytest.fixture
def server():
    return fakeredis.FakeServer()


@pytest.fixture
def process_clock(monkeypatch):
    """`process_clock(seconds)`: from now on this process's clock is that far ahead of Redis's (behind if < 0)."""
    def set_off(seconds: float) -> None:
        monkeypatch.setattr(time, "time", lambda: REDIS_TIME() + seconds)
        monkeypatch.setattr(dramatiq.common, "time", time.time)  # dramatiq's own `from time import time`

    return set_off


def process_broker(server) -> dramatiq.Broker:
    """A broker on the shared (fake) Redis whose clock reads the Redis server's TIME."""
    broker = make_broker(client=fakeredis.FakeRedis(server=server), install=False)
    clock = RedisClock(RedisServerTime())
    broker.clock = clock
    next(m for m in broker.middleware if isinstance(m, RedisClockEtas)).clock = clock
    return broker


def test_a_delayed_job_is_due_on_redis_time_whatever_the_clocks_of_its_enqueuer_and_worker(server, process_clock):
    enqueuer, worker = process_broker(server), process_broker(server)
    enqueuer.declare_queue("default")
    # given an enqueuing process two minutes behind Redis
    process_clock(-120)

    # when it enqueues a job with a 5 s delay
    sent = enqueuer.enqueue(dramatiq.Message(queue_name="default", actor_name="noop", args=(), kwargs={}, options={}),
                            delay=5_000)

    # then the job is due 5 s from now on Redis's clock
    assert abs(sent.options["eta"] - (round(REDIS_TIME() * 1000) + 5_000)) < 100

    # and a worker process two minutes ahead of Redis holds it until 5 s from now on its own clock
    process_clock(+120)
    for middleware in worker.middleware:
        middleware.before_delay_message(worker, sent)
    assert abs(sent.options["eta"] - (round(time.time() * 1000) + 5_000)) < 100


def test_heartbeats_are_stamped_with_redis_time_so_a_worker_behind_is_not_taken_for_dead(server, process_clock):
    behind, ahead = process_broker(server), process_broker(server)
    # given two processes on one Redis, one two minutes behind it and one two minutes ahead
    # when each makes a call to the broker
    for broker, skew in ((behind, -120), (ahead, +120)):
        process_clock(skew)
        broker.declare_queue("default")
        broker.do_qsize("default")

    # then both heartbeats are on Redis's clock: well inside dramatiq's 60 s before a worker counts as dead
    beats = dict(fakeredis.FakeRedis(server=server).zrange("dramatiq:__heartbeats__", 0, -1, withscores=True))
    redis_now = round(REDIS_TIME() * 1000)
    assert [abs(beats[broker.broker_id.encode()] - redis_now) < 1_000 for broker in (behind, ahead)] == [True, True]
