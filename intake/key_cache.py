"""The keys this web process checked lately, so authenticating is not a database query per request.

Bounded in time and size. An entry lives TTL_SECONDS (4 s), then the next request with that key looks
it up again: a key revoked through any web process stops working on every other one within that time
plus one lookup, inside the 5 s the API promises. A TTL was chosen over invalidation through Redis
pub/sub because it cannot miss: a subscriber that lost its connection (or a message published while it
reconnected) would keep a revoked key alive for as long as the process runs, so pub/sub would need a
TTL as a backstop anyway. The price is one indexed lookup per key per process every 4 s, however many
requests the key makes meanwhile. The process that revokes a key forgets it at once.

Entries are keyed by the key's SHA-256 digest, the only form the database keeps, so the process
does not hold plain keys for longer than a request; past MAX_ENTRIES the least recently used go.
"""

import time
from collections import OrderedDict
from collections.abc import Callable

from .principal import Principal

TTL_SECONDS = 4.0
MAX_ENTRIES = 10_000


class KeyCache:
    """digest -> (principal, monotonic deadline). Used from the event loop only: no lock."""

    def __init__(self, *, ttl: float = TTL_SECONDS, max_entries: int = MAX_ENTRIES,
                 clock: Callable[[], float] = time.monotonic):
        self._ttl, self._max_entries, self._clock = ttl, max_entries, clock
        self._entries: OrderedDict[str, tuple[Principal, float]] = OrderedDict()

    def get(self, digest: str) -> Principal | None:
        entry = self._entries.get(digest)
        if entry is None:
            return None
        principal, deadline = entry
        if self._clock() >= deadline:
            del self._entries[digest]
            return None
        self._entries.move_to_end(digest)
        return principal

    def put(self, digest: str, principal: Principal) -> None:
        self._entries[digest] = (principal, self._clock() + self._ttl)
        self._entries.move_to_end(digest)
        while len(self._entries) > self._max_entries:
            self._entries.popitem(last=False)

    def forget_key(self, key_id: int) -> None:
        """Drop a revoked key now (a scan: revoking is rare, the cache small)."""
        for digest in [digest for digest, (principal, _) in self._entries.items() if principal.key_id == key_id]:
            del self._entries[digest]
