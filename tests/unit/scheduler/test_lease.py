"""Exactly one active scheduler: the lease holder runs the calendar; a standby takes over when it dies."""

import threading
import time

import fakeredis

from scheduler.lease import RedisLease
from scheduler.service import SchedulerService


def test_only_one_instance_holds_the_lease():
    client = fakeredis.FakeRedis()
    first, second = RedisLease(client), RedisLease(client)

    assert first.acquire()
    assert not second.acquire()
    assert first.renew() and not second.renew()
    assert first.holder() == first.token


def test_a_lapsed_lease_is_taken_over_and_the_old_holder_cannot_renew():
    client = fakeredis.FakeRedis()
    first, second = RedisLease(client, ttl_ms=50), RedisLease(client, ttl_ms=50)
    assert first.acquire()

    time.sleep(0.12)  # the holder died: it stopped renewing

    assert second.acquire()
    assert not first.renew()


def test_release_only_drops_our_own_lease():
    client = fakeredis.FakeRedis()
    first, second = RedisLease(client), RedisLease(client)
    first.acquire()

    second.release()
    assert first.holder() == first.token
    first.release()
    assert first.holder() is None


def _start(service: SchedulerService) -> threading.Thread:
    thread = threading.Thread(target=service.run, daemon=True)
    thread.start()
    return thread


def test_standby_scheduler_takes_over_when_the_active_one_stops():
    # given two scheduler processes sharing one Redis
    client = fakeredis.FakeRedis()
    installs: list[str] = []
    active = SchedulerService(RedisLease(client, ttl_ms=300), lambda s: installs.append("a"))
    standby = SchedulerService(RedisLease(client, ttl_ms=300), lambda s: installs.append("b"))
    threads = [_start(active)]
    assert active.active.wait(5)
    threads.append(_start(standby))
    time.sleep(0.5)
    assert installs == ["a"] and not standby.active.is_set()

    # when the active one stops
    active.stop()
    threads[0].join(5)

    # then the standby runs the calendar
    assert standby.active.wait(5)
    assert installs == ["a", "b"]
    standby.stop()
    threads[1].join(5)


def test_a_redis_that_goes_away_and_comes_back_empty_stops_then_resumes_the_calendar():
    # given the active scheduler, its lease in a Redis
    server = fakeredis.FakeServer()
    client = fakeredis.FakeRedis(server=server)
    installs: list[str] = []
    service = SchedulerService(RedisLease(client, ttl_ms=300), lambda s: installs.append("calendar"))
    thread = _start(service)
    assert service.active.wait(5)

    # when Redis goes away: the lease cannot be renewed
    server.connected = False
    deadline = time.monotonic() + 5
    while service.active.is_set() and time.monotonic() < deadline:
        time.sleep(0.02)

    # then the calendar stops, but the process stands by instead of ending
    assert not service.active.is_set() and thread.is_alive()

    # when Redis comes back with nothing in it
    server.connected = True
    client.flushall()

    # then the scheduler takes the lease again and runs the calendar
    assert service.active.wait(5)
    assert installs == ["calendar", "calendar"]
    service.stop()
    thread.join(5)
    assert not thread.is_alive()
