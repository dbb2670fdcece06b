"""Per-account request rate limits, shared by every web process through Redis (GCRA, one script call a request).

An account's keys share one budget: keys cost nothing to make, so a budget for each would let a tenant take as much
of the web and the database as it has keys. The operator key has its own. Each budget has a "theoretical arrival
time" (TAT) in Redis, like the sender throttle (shared/messaging/sender_throttle.py): a request is let through while
the TAT is less than `burst` intervals ahead of now, and moves it on by one interval (1 / rate). So an account may
make `burst` requests at once and `rate` a second after that; a refused request does not move the TAT, and its
Retry-After says when the next one will pass. The script reads Redis' own clock, so web processes on different
machines share one timeline; one EVALSHA is the whole cost, awaited on the event loop through the web process's
asyncio Redis pool (intake/asyncio_redis.py): no thread, no connection opened per request. The checks made while a
round trip is out go together in the next, as one EVALSHA over all their keys: under load a round trip and its
client-side overhead serve many requests, and a request waits for at most two.

The limit is a guard, not a ledger: when Redis cannot be reached the request is let through and a
warning logged (at most once a minute), rather than the API going down with it.
"""

import asyncio
import logging
import math

import redis
import redis.asyncio

from shared.config import RateLimit
from shared.logs import Occasionally

from .errors import Problem
from .principal import Principal

log = logging.getLogger(__name__)

KEY_PREFIX = "creditq:rate-limit:"
MICROSECONDS = 1_000_000
WARN_EVERY_SECONDS = 60.0

# KEYS[i] a key's TAT (microseconds, Redis clock); ARGV[2i-1] its interval (microseconds), ARGV[2i] its burst.
# Returns, for each key in order, 0 when its request may pass, else the microseconds until one may. A key named
# twice is checked twice, the second time after the first moved its TAT.
_TAKE = """
local now_parts = redis.call('TIME')
local now = tonumber(now_parts[1]) * 1000000 + tonumber(now_parts[2])
local answers = {}
for i, key in ipairs(KEYS) do
    local interval = tonumber(ARGV[2 * i - 1])
    local tat = math.max(tonumber(redis.call('GET', key) or '0'), now)
    local wait = tat - interval * (tonumber(ARGV[2 * i]) - 1) - now
    if wait > 0 then
        answers[i] = string.format('%d', wait)
    else
        local new_tat = tat + interval
        local ttl_ms = math.floor((new_tat - now) / 1000) + 1000
        redis.call('SET', key, string.format('%d', new_tat), 'PX', string.format('%d', ttl_ms))
        answers[i] = '0'
    end
end
return answers
"""


class RateLimiter:
    """Refuses a principal's request past its limit with 429 and Retry-After (seconds, rounded up)."""

    def __init__(self, client: redis.asyncio.Redis, *, keys: RateLimit | None, operator: RateLimit | None):
        self._client, self._keys, self._operator = client, keys, operator
        self._script = client.register_script(_TAKE)  # EVALSHA, loading the script when the server lacks it
        self._queued: list[tuple[tuple[str, int, int], asyncio.Future]] = []
        self._sending: asyncio.Task | None = None
        self._redis_away = Occasionally(WARN_EVERY_SECONDS)

    async def check(self, principal: Principal) -> None:
        limit = self._operator if principal.is_operator else self._keys
        if limit is None:
            return
        bucket = KEY_PREFIX + ("operator" if principal.is_operator else f"account:{principal.account_id}")
        interval = math.ceil(MICROSECONDS / limit.per_second)
        answer = asyncio.get_running_loop().create_future()
        self._queued.append(((bucket, interval, limit.burst), answer))
        if self._sending is None:
            self._sending = asyncio.create_task(self._send())
        try:
            wait = int(await answer)
        except redis.RedisError:
            self._warn()
            return
        if wait > 0:
            retry_after = max(math.ceil(wait / MICROSECONDS), 1)
            who = "The operator key" if principal.is_operator else "This account's keys together"
            raise Problem(429, "Too Many Requests",
                          f"{who} may make {limit.per_second:g} requests a second (bursts of {limit.burst}); "
                          f"retry in {retry_after} s.", headers={"Retry-After": str(retry_after)})

    async def close(self) -> None:
        """Let the round trip out finish, so every check made gets its answer."""
        if self._sending is not None:
            await self._sending

    async def _send(self) -> None:
        """Round trips one after another, each carrying every check queued by then, until none is left."""
        batch = []
        try:
            while self._queued:
                batch, self._queued = self._queued, []
                try:
                    results = await self._take([call for call, _ in batch])
                except Exception as error:  # Redis down (the requests pass) or a fault (they fail): never unanswered
                    results = [error] * len(batch)
                for (_, answer), result in zip(batch, results):
                    if answer.done():  # its request went away
                        continue
                    if isinstance(result, BaseException):
                        answer.set_exception(result)
                    else:
                        answer.set_result(result)
        finally:
            self._sending = None
            for _, answer in batch:  # cancelled mid-trip (the loop is closing): the answers are unknown
                answer.cancel()

    async def _take(self, calls: list[tuple[str, int, int]]) -> list:
        """The script's answer for each call, in one EVALSHA."""
        return await self._script(keys=[bucket for bucket, _, _ in calls],
                                  args=[value for _, interval, burst in calls for value in (interval, burst)])

    def _warn(self) -> None:
        if self._redis_away.due():
            log.warning("rate limits are not enforced: Redis did not answer", exc_info=True)
