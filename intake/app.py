"""The intake application factory."""

import asyncio
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

import dramatiq
from aiohttp import web

from shared.broker import redis_beside
from shared.config import Settings
from shared.db import Database
from shared.events import outbox

from .appkeys import CLOCK, DATABASE, ENQUEUER, KEY_CACHE, OPENAPI_DOCUMENT, RATE_LIMITER, REDIS, SETTINGS
from .asyncio_redis import asyncio_redis_like
from .auth import auth_middleware
from .body_limits import MAX_BULK_BODY_BYTES, body_limit_middleware
from .console import add_console, console_middleware, console_session_middleware
from .enqueue import Enqueuer
from .errors import problem_middleware
from .key_cache import KeyCache
from .log_context import log_context_middleware
from .malformed_requests import quiet_malformed_requests
from .metrics import metrics_middleware
from .openapi import build_document
from .policy import action_for_path, check_declared
from .rate_limit import RateLimiter
from .routes import (
    account_life,
    accounts,
    admin,
    api_keys,
    auto_recharge,
    balance,
    calls,
    campaigns,
    dunning,
    erasures,
    estimate,
    forecasts,
    message_search,
    messages,
    numbers,
    operations,
    opt_outs,
    payment_method,
    purchases,
    twilio_credentials,
    users,
    voice_webhooks,
    webhook_endpoints,
    webhooks,
)
from .text import text_middleware

DISPATCH_ACTOR = "dispatch_webhook_event"
ROUTE_MODULES = [operations, estimate, opt_outs, webhooks, accounts, api_keys, balance, forecasts, users, numbers,
                 messages, message_search, twilio_credentials, purchases, auto_recharge, payment_method, dunning, admin,
                 campaigns, account_life, webhook_endpoints, calls, voice_webhooks,
                 erasures]


def init_app(settings: Settings, *, database: Database | None = None, broker: dramatiq.Broker | None = None,
             clock: Callable[[], datetime] | None = None) -> web.Application:
    """Build the app; a database or broker passed in (tests) is used as is and not disposed.

    The rate limits use the Redis every web process shares (the broker's, or REDIS_URL's beside RabbitMQ), through an
    asyncio pool of their own.
    """
    quiet_malformed_requests()
    app = web.Application(middlewares=[log_context_middleware, metrics_middleware, problem_middleware, body_limit_middleware,
                                       text_middleware, console_session_middleware(settings), auth_middleware,
                                       console_middleware],
                          client_max_size=MAX_BULK_BODY_BYTES)
    app[SETTINGS] = settings
    app[CLOCK] = clock or _utc_now
    app[KEY_CACHE] = KeyCache()
    if database is not None:
        app[DATABASE] = database
    else:
        app.cleanup_ctx.append(_database_ctx)
    app[ENQUEUER] = Enqueuer(broker)
    enqueuer = app[ENQUEUER]
    # events committed by this process's transactions (an inbound text's message.received) go out at once
    outbox.on_written(lambda event_ids: enqueuer.send_many_blocking(DISPATCH_ACTOR, [(i,) for i in event_ids]))
    app.cleanup_ctx.append(_redis_ctx)
    app.cleanup_ctx.append(messages.accept_batcher_ctx)
    app.cleanup_ctx.append(webhooks.callback_batcher_ctx)
    app.cleanup_ctx.append(operations.deployment_metrics_ctx)
    for module in ROUTE_MODULES:
        app.add_routes(module.routes)
    add_console(app)
    check_declared(app)
    app[OPENAPI_DOCUMENT] = build_document(ROUTE_MODULES, action_for_path(app))
    return app


def _utc_now() -> datetime:
    return datetime.now(UTC)


async def _redis_ctx(app: web.Application) -> AsyncIterator[None]:
    """The asyncio Redis pool on the shared Redis (`redis_beside` the broker), and the rate limiter that uses it."""
    client = app[REDIS] = asyncio_redis_like(redis_beside(app[ENQUEUER].broker))
    settings = app[SETTINGS]
    limiter = app[RATE_LIMITER] = RateLimiter(client, keys=settings.key_rate_limit,
                                              operator=settings.operator_rate_limit)
    yield
    await limiter.close()
    await client.aclose(close_connection_pool=True)


async def _database_ctx(app: web.Application) -> AsyncIterator[None]:
    """CREDITQ_WEB_THREADS threads for `asyncio.to_thread`, and a pool of as many connections.

    Every database call of the web process runs in one of these threads, one session at a time, so a pool of that
    size keeps a connection for each and never opens one under load (10 kept under 20 threads opened and closed its
    overflow connections, each a new PostgreSQL session, over and over). The loop's default executor would have
    min(32, CPUs + 4) threads: 6 on two cores, too few for the accept batches, key lookups and webhooks at once.
    """
    threads = app[SETTINGS].web_threads
    database = Database(app[SETTINGS].database_url, pool_size=threads)
    app[DATABASE] = database
    asyncio.get_running_loop().set_default_executor(ThreadPoolExecutor(max_workers=threads, thread_name_prefix="db"))
    yield
    database.dispose()
