"""Injected trouble on the Twilio API: latency, 429 / 20429 with Retry-After, and 500 / 20500.

An injected error is decided before the handler runs, so nothing is created: the caller may
safely retry, as with a real 429.
"""

import asyncio

from aiohttp import web
from aiohttp.typedefs import Handler

from .auth import TWILIO_API_PREFIX
from .errors import internal_error, too_many_requests
from .state import config_key, faults_key, rng_key


@web.middleware
async def fault_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    if not request.path.startswith(TWILIO_API_PREFIX):
        return await handler(request)
    config = request.app[config_key]
    if config.latency_ms:
        await asyncio.sleep(config.latency_ms / 1000)
    roll = request.app[rng_key].random()
    if roll < config.rate_429:
        request.app[faults_key]["429"] += 1
        raise too_many_requests(config.retry_after_s)
    if roll < config.rate_429 + config.rate_5xx:
        request.app[faults_key]["5xx"] += 1
        raise internal_error()
    return await handler(request)
