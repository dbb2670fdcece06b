"""Redis's clock, for every time that processes on different machines compare through Redis.

A process's own clock may be minutes off the others' (no NTP, a VM resumed, a container's drift). The
sender throttles and the rate limits read Redis's TIME inside their scripts and the scheduler's lease
is a Redis expiry, so they need nothing from here. dramatiq writes its own times from the process's
clock: each worker's heartbeat (a worker whose heartbeat looks a minute old is declared dead and the
jobs it holds are handed to others, so they run twice) and the eta of every delayed job (a retry's
backoff, a send that waits for its sender's slot: run minutes early or late). `RedisClock` gives those
Redis's time instead, as this process's clock plus an offset measured against Redis's TIME now and
then: one round trip every REFRESH_SECONDS, not one per job.
"""

import math
import threading
import time

import dramatiq
import redis

REFRESH_SECONDS = 30.0


class RedisClock:
    """Milliseconds since the epoch on Redis's clock, to within a round trip."""

    def __init__(self, client: redis.Redis, *, refresh_seconds: float = REFRESH_SECONDS):
        self._client = client
        self._refresh_seconds = refresh_seconds
        self._offset_ms = 0  # Redis's clock minus ours; 0 until Redis first answers
        self._measured_at = -math.inf
        self._lock = threading.Lock()

    def offset_ms(self) -> int:
        """How far Redis's clock is ahead of this process's (negative: behind)."""
        if time.monotonic() - self._measured_at >= self._refresh_seconds:
            self._measure()
        return self._offset_ms

    def millis(self) -> int:
        return _local_millis() + self.offset_ms()

    def _measure(self) -> None:
        """Redis's TIME against the middle of the round trip. Redis away: the last offset stays, asked again later."""
        with self._lock:
            if time.monotonic() - self._measured_at < self._refresh_seconds:
                return  # another thread has just measured
            self._measured_at = time.monotonic()
            try:
                before = time.time()
                seconds, microseconds = self._client.time()
                after = time.time()
            except redis.RedisError:
                return
            self._offset_ms = seconds * 1000 + microseconds // 1000 - round((before + after) * 500)


def _local_millis() -> int:
    return round(time.time() * 1000)


class RedisClockEtas(dramatiq.Middleware):
    """A delayed job's eta travels on Redis's clock: the enqueuing process writes it so, and the worker that holds
    it until then turns it back into its own clock's time, so it runs when it should whoever's clock is off."""

    def __init__(self, clock: RedisClock):
        self.clock = clock

    def before_enqueue(self, broker, message, delay):
        if delay is not None and "eta" in message.options:  # dramatiq set it from this process's clock
            message.options["eta"] += self.clock.offset_ms()

    def before_delay_message(self, broker, message):
        message.options["eta"] -= self.clock.offset_ms()
