"""Injected trouble on the Twilio API: latency, 429 / 20429 with Retry-After, 500 / 20500, requests that hang,
and creates whose answer is lost.

A 429, a 500 or a hang is decided before the handler runs, so nothing is created: the caller may
safely retry, as with a real 429 (though after a hang it cannot know that). A lost answer is the
opposite: the message is created and goes on to its callbacks, and only its answer waits, past the
caller's timeout, so the caller must find the message rather than create it again.
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
    faults = request.app[faults_key]
    if roll < (bound := config.rate_429):
        faults["429"] += 1
        raise too_many_requests(config.retry_after_s)
    if roll < (bound := bound + config.rate_5xx):
        faults["5xx"] += 1
        raise internal_error()
    if roll < (bound := bound + config.rate_timeout):
        faults["timeout"] += 1
        await asyncio.sleep(config.hang_s)
        raise internal_error()
    if roll < bound + config.rate_lost_answer and _is_create(request):
        faults["lost_answer"] += 1
        response = await handler(request)
        await asyncio.sleep(config.hang_s)
        return response
    return await handler(request)


def _is_create(request: web.Request) -> bool:
    return request.method == "POST" and request.path.endswith("/Messages.json")
