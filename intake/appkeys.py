"""Typed keys for what the application and each request carry."""

from collections.abc import Callable
from datetime import datetime

import redis.asyncio
from aiohttp import web
from prometheus_client import CollectorRegistry

from shared.config import Settings
from shared.db import Database

from .enqueue import Enqueuer
from .key_cache import KeyCache
from .principal import Principal
from .rate_limit import RateLimiter

SETTINGS = web.AppKey("settings", Settings)
DATABASE = web.AppKey("database", Database)
PRINCIPAL = web.RequestKey("principal", Principal)
KEY_CACHE = web.AppKey("api_key_cache", KeyCache)
RATE_LIMITER = web.AppKey("rate_limiter", RateLimiter)
REDIS = web.AppKey("redis", redis.asyncio.Redis)  # the broker's server, for what the event loop awaits itself
CLOCK = web.AppKey("clock", Callable[[], datetime])  # aware UTC now; tests pass their own
OPENAPI_DOCUMENT = web.AppKey("openapi_document", dict)
ENQUEUER = web.AppKey("enqueuer", Enqueuer)
DEPLOYMENT_METRICS = web.AppKey("deployment_metrics", CollectorRegistry)  # the gauges /metrics reads for everyone
