"""How many webhook attempts are under way at once: of one account, across every worker process (Redis), and of
all accounts, in one worker process.

An attempt holds a worker thread for as long as the endpoint takes to answer, up to the timeout, and the threads
serve every queue: sends, settlements, other accounts' deliveries. Endpoints that answer slowly or never (an
outage of a receiver many tenants use, a tenant's tarpit) sent thousands of events would hold every thread, and
everyone's sends would stop. So each attempt first takes a slot of its process and one of its account's across
every process; with either taken the attempt is not made but deferred (shared.events.delivery).

- A process gives webhooks half its threads (the other half stays for everything else). An account with attempts
  under way in it takes another only within an equal share among those accounts and one more; an account with none
  takes any slot free. So one account alone takes half of them, and accounts whose endpoints answer slowly come
  down to their share as their attempts end (three in a process of four slots: one each), leaving the rest to
  accounts arriving. As many slow accounts as the process has slots (a receiver many tenants use going down) hold
  them all: the others wait for slots to free.
- An account's slots across every process keep one account's endpoints from taking every webhook thread from the
  others. Each is held under a token of the attempt's own and lapses with the attempt's lease, so a worker killed
  mid-request gives it back by itself. The script reads Redis's clock, so processes on different machines share
  one timeline.
"""

import logging
import math
import threading
import uuid

log = logging.getLogger(__name__)

KEY_PREFIX = "creditq:webhook-slots:"

# KEYS[1] the account's slots: a sorted set of attempt tokens, each scored with its lease's end (Redis clock, ms).
# ARGV[1] slots at most; ARGV[2] the attempt's token; ARGV[3] the lease (ms). 1 when taken, else 0.
_TAKE = """
local now_parts = redis.call('TIME')
local now = tonumber(now_parts[1]) * 1000 + math.floor(tonumber(now_parts[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[1]) then
  return 0
end
local lease_end = now + tonumber(ARGV[3])
redis.call('ZADD', KEYS[1], string.format('%d', lease_end), ARGV[2])
local latest = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
redis.call('PEXPIREAT', KEYS[1], string.format('%d', math.max(lease_end, tonumber(latest[2]))))
return 1
"""


class WebhookSlots:
    """`per_account` attempts of one account at once, `per_process` of this process (an account's in it within a
    share kept for one more account); safe to share between threads."""

    def __init__(self, redis_client, *, per_account: int, per_process: int):
        if per_account < 1 or per_process < 1:
            raise ValueError(f"slots must be at least 1, not {per_account!r} an account, {per_process!r} a process")
        self.per_account, self.per_process = per_account, per_process
        self._lock = threading.Lock()
        self._here: dict[str, int] = {}  # attempts under way in this process, by account
        self._redis = redis_client
        self._take = redis_client.register_script(_TAKE)

    def take(self, account_id: str, *, seconds: float) -> str | None:
        """Slots for an attempt of the account, held for `seconds` at most (its lease): the token to give them back
        with, or None when there is none free."""
        with self._lock:
            held = self._here.get(account_id, 0)
            within_share = not held or (held + 1) * (len(self._here) + 1) <= self.per_process
            if sum(self._here.values()) >= self.per_process or not within_share:
                return None
            self._here[account_id] = held + 1
        taken = False
        try:
            token, lease_ms = uuid.uuid4().hex, math.ceil(seconds * 1000)
            taken = bool(self._take(keys=[KEY_PREFIX + account_id], args=[self.per_account, token, lease_ms]))
        finally:
            if not taken:
                self._release_here(account_id)
        return token if taken else None

    def _release_here(self, account_id: str) -> None:
        with self._lock:
            self._here[account_id] -= 1
            if not self._here[account_id]:
                del self._here[account_id]

    def give_back(self, account_id: str, token: str) -> None:
        """Free the attempt's slots; a Redis that fails here costs nothing but the account slot's lease."""
        self._release_here(account_id)
        try:
            self._redis.zrem(KEY_PREFIX + account_id, token)
        except Exception:
            log.warning("the webhook slot of an attempt of %s lapses with its lease: Redis failed", account_id,
                        exc_info=True)
