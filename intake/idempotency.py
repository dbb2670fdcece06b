"""Idempotency-Key on POSTs that create: the same key and body get the first answer again; another body, 409.

The records live in shared.idempotency: a key is claimed before the handler runs; a retry while the
first request is still running gets 409 with Retry-After (when the claim of a process that died would
be released); records are purged after 24 h.

The first answer is stored encrypted (IdempotencyRecord.body) and the request only as a keyed digest: the
database holds neither the API key a creation answered with nor what a refused request carried.
"""

import asyncio
import functools
import hashlib
import math
from datetime import timedelta

from aiohttp import web

from shared import idempotency, secrets
from shared.ids import keyed_id
from shared.models import IdempotencyRecord

from .appkeys import CLOCK, DATABASE, PRINCIPAL, SETTINGS
from .bodies import read_body
from .errors import Problem, is_domain_error, render_error

MAX_KEY_LENGTH = 200


def idempotent(handler):
    """Claim (caller, key) before running the handler, so concurrent twins cannot both create."""

    @functools.wraps(handler)
    async def wrapper(request: web.Request) -> web.StreamResponse:
        key = request.headers.get("Idempotency-Key")
        if key is None:
            return await handler(request)
        if not 0 < len(key) <= MAX_KEY_LENGTH or not key.isascii() or not key.isprintable():
            raise Problem(400, "Bad Request",
                          f"Idempotency-Key must be 1 to {MAX_KEY_LENGTH} printable ASCII characters.")
        database = request.app[DATABASE]
        principal = request[PRINCIPAL].name
        fingerprint = await _fingerprint(request)
        digest = secrets.digest(fingerprint)
        now = request.app[CLOCK]()
        timeout = timedelta(seconds=request.app[SETTINGS].idempotency_claim_timeout_seconds)
        holder = await asyncio.to_thread(idempotency.claim, database, principal, key, digest, now=now, timeout=timeout)
        if holder is not None:
            return _replay(holder, fingerprint, idempotency.retry_after(holder, now=now, timeout=timeout))

        async def keep(answer: web.StreamResponse | None) -> None:
            """Remember an answer worth replaying (bad input is one); give the key back otherwise: after a
            failure, or a 429, the same request may pass when tried again."""
            if isinstance(answer, web.Response) and answer.status < 500 and answer.status != 429:
                await asyncio.to_thread(idempotency.record_answer, database, principal, key, claimed_at=now,
                                        status=answer.status, body=answer.text or "")
            else:
                await asyncio.to_thread(idempotency.release, database, principal, key, claimed_at=now)

        try:
            response = await handler(request)
        except Exception as error:
            await keep(render_error(error) if isinstance(error, Problem) or is_domain_error(error) else None)
            raise
        await keep(response)
        return response

    return wrapper


async def resumable_id(request: web.Request, prefix: str) -> str | None:
    """The id of what this request creates, the same on every retry of it (same caller, Idempotency-Key and
    request; None without a key): a retry after a crash finds the work its first try began and finishes it."""
    key = request.headers.get("Idempotency-Key")
    if key is None:
        return None
    request_hash = hashlib.sha256(await _fingerprint(request)).hexdigest()
    return keyed_id(prefix, f"{request[PRINCIPAL].name}\n{key}\n{request_hash}")


async def _fingerprint(request: web.Request) -> bytes:
    """The request as the key binds it: method, path with its query string (a text/csv campaign names itself
    there), body."""
    return request.method.encode() + request.path_qs.encode() + await read_body(request)


def _replay(record: IdempotencyRecord, fingerprint: bytes, wait: timedelta) -> web.Response:
    if not secrets.digest_matches(fingerprint, record.request_hash):
        raise Problem(409, "Idempotency key reused", "This Idempotency-Key was used with a different request.")
    if record.status == idempotency.IN_PROGRESS:
        seconds = max(math.ceil(wait.total_seconds()), 1)
        raise Problem(409, "Request in progress",
                      f"A request with this Idempotency-Key is still being processed; retry in {seconds} s.",
                      headers={"Retry-After": str(seconds)})
    content_type = "application/problem+json" if record.status >= 400 else "application/json"
    response = web.Response(status=record.status, text=record.body, content_type=content_type)
    response.headers["Idempotent-Replayed"] = "true"
    return response
