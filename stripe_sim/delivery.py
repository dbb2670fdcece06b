"""Signed delivery of events to the webhook URL, as Stripe does it: `Stripe-Signature: t=...,v1=...`
(HMAC-SHA256 of `t.payload` under the endpoint's secret), retried until a 2xx answers.

Events wait in the store, so those not delivered when the stand-in stops go out after it restarts. The knobs
delay, duplicate, reorder, fail or lose deliveries.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import random
import time

import aiohttp

from .config import SimulatorConfig
from .store import Store

log = logging.getLogger(__name__)
POLL_SECONDS = 0.05


def signature_header(payload: str, secret: str, timestamp: int | None = None) -> str:
    timestamp = int(time.time()) if timestamp is None else timestamp
    mac = hmac.new(secret.encode(), f"{timestamp}.{payload}".encode(), hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


async def deliver_forever(store: Store, config: SimulatorConfig, rng: random.Random) -> None:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        while True:
            try:
                await deliver_due(store, config, rng, session)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("event delivery failed")
            await asyncio.sleep(POLL_SECONDS)


async def deliver_due(store: Store, config: SimulatorConfig, rng: random.Random, session: aiohttp.ClientSession):
    if not config.webhook_url:
        return
    for seq, event, attempts in store.due_events(time.time(), newest_first=config.event_reorder):
        if rng.random() < config.event_loss_rate:
            store.mark_delivered(seq)
            log.info("lost %s %s on purpose", event["type"], event["id"])
            continue
        delivered = False
        if rng.random() >= config.event_failure_rate:
            payload = json.dumps(event)
            for _ in range(max(1, config.event_duplicates)):
                delivered = await _post(session, config, payload) or delivered
        if delivered:
            store.mark_delivered(seq)
        else:
            store.retry_later(seq, time.time() + config.event_retry_ms / 1000 * 2 ** min(attempts, 6))


async def _post(session: aiohttp.ClientSession, config: SimulatorConfig, payload: str) -> bool:
    headers = {"Content-Type": "application/json", "Stripe-Signature": signature_header(payload, config.webhook_secret)}
    try:
        async with session.post(config.webhook_url, data=payload, headers=headers) as response:
            return 200 <= response.status < 300
    except (aiohttp.ClientError, asyncio.TimeoutError):
        return False
