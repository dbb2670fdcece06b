"""How many webhook deliveries of one slow account are under way at once, across every worker process (Redis).

An attempt holds a worker thread for as long as the endpoint takes to answer, up to the timeout, and the threads
are shared with every other job: sends, settlements, other accounts' deliveries. An account whose endpoint answers
slowly or never (an outage, a tarpit) and that was sent thousands of events would hold every thread, for every
tenant. So an account whose last attempts took SLOW_SECONDS or more is slow for SLOW_FOR_SECONDS after the last
such one, and while it is, each of its attempts first takes one of its few slots; with none free the attempt does
not wait on a thread but is deferred (shared.events.delivery). An account whose endpoints answer quickly takes no
slot and waits for none, however many of its deliveries are under way. A slot lapses with its attempt's lease, so
a worker killed mid-request gives it back by itself. The script reads Redis's clock, so processes on different
machines share one timeline.
"""

import math

KEY_PREFIX = "creditq:webhook-slots:"
SLOW_KEY_PREFIX = "creditq:webhook-slow:"
SLOW_SECONDS = 2.0  # an attempt this long (a timeout, a tarpit) makes its account slow
SLOW_FOR_SECONDS = 300.0  # how long an account stays slow after its last slow attempt

# KEYS[1] the account's slow mark; KEYS[2] its slots: a sorted set of holders, each scored with its lease's end
# (Redis clock, ms). ARGV[1] slots at most; ARGV[2] the holder (a delivery); ARGV[3] the lease (ms).
# 1 when the attempt may go (the account is not slow, or a slot is taken or held already), else 0.
_TAKE = """
if redis.call('EXISTS', KEYS[1]) == 0 then
  return 1
end
local now_parts = redis.call('TIME')
local now = tonumber(now_parts[1]) * 1000 + math.floor(tonumber(now_parts[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
if not redis.call('ZSCORE', KEYS[2], ARGV[2]) and redis.call('ZCARD', KEYS[2]) >= tonumber(ARGV[1]) then
  return 0
end
redis.call('ZADD', KEYS[2], string.format('%d', now + tonumber(ARGV[3])), ARGV[2])
redis.call('PEXPIRE', KEYS[2], ARGV[3])
return 1
"""


class AccountSlots:
    """`per_account` attempts of one slow account under way at once; safe to share between threads."""

    def __init__(self, redis_client, per_account: int, *, slow_seconds: float = SLOW_SECONDS):
        if per_account < 1:
            raise ValueError(f"per_account must be at least 1, not {per_account!r}")
        self.per_account, self.slow_seconds = per_account, slow_seconds
        self._redis = redis_client
        self._take = redis_client.register_script(_TAKE)

    def take(self, account_id: str, delivery_id: str, *, seconds: float) -> bool:
        """May the delivery's attempt go now: yes unless its account is slow and all its slots are taken. A slot is
        held for `seconds` at most (the attempt's lease)."""
        lease_ms = math.ceil(seconds * 1000)
        return bool(self._take(keys=[SLOW_KEY_PREFIX + account_id, KEY_PREFIX + account_id],
                               args=[self.per_account, delivery_id, lease_ms]))

    def give_back(self, account_id: str, delivery_id: str, *, took_seconds: float) -> None:
        """The attempt is over, after `took_seconds`: its slot (if it held one) is free, and a slow attempt marks
        its account slow."""
        pipeline = self._redis.pipeline(transaction=False)
        pipeline.zrem(KEY_PREFIX + account_id, delivery_id)
        if took_seconds >= self.slow_seconds:
            pipeline.set(SLOW_KEY_PREFIX + account_id, 1, px=math.ceil(SLOW_FOR_SECONDS * 1000))
        pipeline.execute()
