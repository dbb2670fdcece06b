"""One active scheduler at a time: a Redis lease that the holder renews and a standby takes over."""

import secrets

import redis

_RENEW = """
if redis.call('get', KEYS[1]) == ARGV[1] then
    return redis.call('pexpire', KEYS[1], ARGV[2])
end
return 0
"""
_RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then
    return redis.call('del', KEYS[1])
end
return 0
"""


class RedisLease:
    """Held while the key carries our token; it lapses by itself if the holder dies."""

    def __init__(self, client: redis.Redis, name: str = "creditq:scheduler:lease", ttl_ms: int = 15_000):
        self.client = client
        self.name = name
        self.ttl_ms = ttl_ms
        self.token = secrets.token_hex(16)
        self._renew = client.register_script(_RENEW)
        self._release = client.register_script(_RELEASE)

    def acquire(self) -> bool:
        return bool(self.client.set(self.name, self.token, nx=True, px=self.ttl_ms))

    def renew(self) -> bool:
        return bool(self._renew(keys=[self.name], args=[self.token, self.ttl_ms]))

    def release(self) -> None:
        self._release(keys=[self.name], args=[self.token])

    def holder(self) -> str | None:
        value = self.client.get(self.name)
        return value.decode() if value is not None else None
