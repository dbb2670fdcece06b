"""Where Redis is: REDIS_URL, or the embedded server kept in the data directory."""

from shared.config import Settings
from shared.embedded_redis import EmbeddedRedis


def embedded_redis_for(settings: Settings) -> EmbeddedRedis:
    return EmbeddedRedis(settings.data_dir / "redis")


def resolve_redis_url(settings: Settings) -> tuple[str, EmbeddedRedis | None]:
    """The URL to use and, when this process had to start the embedded server, that server (to stop later)."""
    if settings.redis_url:
        return settings.redis_url, None
    embedded = embedded_redis_for(settings)
    if embedded.is_running():
        return embedded.url, None
    return embedded.start().url, embedded
