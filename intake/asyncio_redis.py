"""The web process's asyncio Redis: a pool on the shared Redis, so what a request asks of Redis itself (its
rate limit) is awaited on the event loop, never run in a thread.

The pool is made from a synchronous client (the broker's, when it queues on Redis), so the two always reach the
same server, database and credentials (REDIS_URL, or the client a test passes in): the same connection settings,
through the asyncio counterpart of its connection class.
"""

import redis
import redis.asyncio

# Connections open at most, opened as needed and kept: the rate limiter keeps one round trip out at a time, so it
# holds one. Past this many at once a caller waits for one to come back.
MAX_CONNECTIONS = 4

# The synchronous connection classes and their asyncio counterparts; a client library with connection classes of its
# own adds its pair (the unit tests' fakeredis, tests/support/brokers.py).
ASYNCIO_CONNECTION_CLASSES: dict[type, type] = {
    redis.Connection: redis.asyncio.Connection,
    redis.SSLConnection: redis.asyncio.SSLConnection,
    redis.UnixDomainSocketConnection: redis.asyncio.UnixDomainSocketConnection,
}
# Connection settings that are synchronous objects, with no meaning for an asyncio connection.
_SYNCHRONOUS_SETTINGS = frozenset({"maint_notifications_pool_handler", "client_class"})


def asyncio_redis_like(client: redis.Redis, *, max_connections: int = MAX_CONNECTIONS) -> redis.asyncio.Redis:
    """An asyncio client on the server `client` talks to, with a pool of at most `max_connections`, opened as needed
    and kept (no connection per request)."""
    pool = client.connection_pool
    settings = {name: value for name, value in pool.connection_kwargs.items() if name not in _SYNCHRONOUS_SETTINGS}
    return redis.asyncio.Redis(connection_pool=redis.asyncio.BlockingConnectionPool(
        connection_class=ASYNCIO_CONNECTION_CLASSES[pool.connection_class], max_connections=max_connections,
        **settings))
