"""Per-key request rate limits, shared by every web process through Redis (GCRA, one script call a request).

Each key has a "theoretical arrival time" (TAT) in Redis, like the sender throttle
(shared/messaging/sender_throttle.py): a request is let through while the TAT is less than `burst`
intervals ahead of now, and moves it on by one interval (1 / rate). So a key may make `burst` requests
at once and `rate` a second after that; a refused request does not move the TAT, and its Retry-After
says when the next one will pass. The script reads Redis' own clock, so web processes on different
machines share one timeline; one EVALSHA is the whole cost, one round trip, awaited on the event loop through the
web process's asyncio Redis pool (intake/asyncio_redis.py): no thread, no connection opened per request.

The limit is a guard, not a ledger: when Redis cannot be reached the request is let through and a
warning logged (at most once a minute), rather than the API going down with it.
"""

import logging
import math
import time

import redis
import redis.asyncio

from shared.config import RateLimit

from .errors import Problem
from .principal import Principal

log = logging.getLogger(__name__)

KEY_PREFIX = "creditq:rate-limit:"
MICROSECONDS = 1_000_000
WARN_EVERY_SECONDS = 60.0

# KEYS[1] the key's TAT (microseconds, Redis clock); ARGV[1] the interval (microseconds), ARGV[2] the burst.
# Returns 0 when the request may pass, else the microseconds until one may.
_TAKE = """
local now_parts = redis.call('TIME')
local now = tonumber(now_parts[1]) * 1000000 + tonumber(now_parts[2])
local interval = tonumber(ARGV[1])
local tat = math.max(tonumber(redis.call('GET', KEYS[1]) or '0'), now)
local wait = tat - interval * (tonumber(ARGV[2]) - 1) - now
if wait > 0 then
    return string.format('%d', wait)
end
local new_tat = tat + interval
redis.call('SET', KEYS[1], string.format('%d', new_tat), 'PX', string.format('%d', math.floor((new_tat - now) / 1000) + 1000))
return '0'
"""


class RateLimiter:
    """Refuses a principal's request past its limit with 429 and Retry-After (seconds, rounded up)."""

    def __init__(self, client: redis.asyncio.Redis, *, keys: RateLimit | None, operator: RateLimit | None):
        self._keys, self._operator = keys, operator
        self._take = client.register_script(_TAKE)  # EVALSHA, loading the script once if the server lacks it
        self._warned_at = -math.inf

    async def check(self, principal: Principal) -> None:
        limit = self._operator if principal.is_operator else self._keys
        if limit is None:
            return
        bucket = KEY_PREFIX + ("operator" if principal.is_operator else f"key:{principal.key_id}")
        interval = math.ceil(MICROSECONDS / limit.per_second)
        try:
            wait = int(await self._take(keys=[bucket], args=[interval, limit.burst]))
        except redis.RedisError:
            self._warn()
            return
        if wait > 0:
            retry_after = max(math.ceil(wait / MICROSECONDS), 1)
            raise Problem(429, "Too Many Requests",
                          f"This key may make {limit.per_second:g} requests a second (bursts of {limit.burst}); "
                          f"retry in {retry_after} s.", headers={"Retry-After": str(retry_after)})

    def _warn(self) -> None:
        now = time.monotonic()
        if now - self._warned_at >= WARN_EVERY_SECONDS:
            self._warned_at = now
            log.warning("rate limits are not enforced: Redis did not answer", exc_info=True)
