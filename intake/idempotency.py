"""Idempotency-Key on POSTs that create: the same key and body get the first answer again; another body, 409.

The first answer is stored encrypted (IdempotencyRecord.body) and the request only as a keyed digest: the
database holds neither the API key a creation answered with nor what a refused request carried.
"""

import asyncio
import functools

from aiohttp import web
from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError

from shared import secrets
from shared.db import Database
from shared.models import IdempotencyRecord

from .appkeys import DATABASE, PRINCIPAL
from .errors import Problem, is_domain_error, render_error

MAX_KEY_LENGTH = 200
IN_PROGRESS = 0  # status of a claimed key whose first request has not answered yet


def idempotent(handler):
    """Claim (caller, key) before running the handler, so concurrent twins cannot both create."""

    @functools.wraps(handler)
    async def wrapper(request: web.Request) -> web.StreamResponse:
        key = request.headers.get("Idempotency-Key")
        if key is None:
            return await handler(request)
        if not key or len(key) > MAX_KEY_LENGTH:
            raise Problem(400, "Bad Request", f"Idempotency-Key must be 1 to {MAX_KEY_LENGTH} characters.")
        database = request.app[DATABASE]
        principal = request[PRINCIPAL].name
        fingerprint = request.method.encode() + request.path.encode() + await request.read()
        previous = await asyncio.to_thread(_claim, database, principal, key, secrets.digest(fingerprint))
        if previous is not None:
            return _replay(previous, fingerprint)
        try:
            response = await handler(request)
        except Exception as error:
            if isinstance(error, Problem) and error.status < 500 or is_domain_error(error):
                # Bad input is an answer too: remember it the way the middleware will render it.
                await asyncio.to_thread(_record, database, principal, key, render_error(error))
            else:
                await asyncio.to_thread(_release, database, principal, key)
            raise
        if response.status < 500 and isinstance(response, web.Response):
            await asyncio.to_thread(_record, database, principal, key, response)
        else:
            await asyncio.to_thread(_release, database, principal, key)
        return response

    return wrapper


def _replay(record: IdempotencyRecord, fingerprint: bytes) -> web.Response:
    if not secrets.digest_matches(fingerprint, record.request_hash):
        raise Problem(409, "Idempotency key reused", "This Idempotency-Key was used with a different request.")
    if record.status == IN_PROGRESS:
        raise Problem(409, "Request in progress", "A request with this Idempotency-Key is still being processed.")
    content_type = "application/problem+json" if record.status >= 400 else "application/json"
    response = web.Response(status=record.status, text=record.body, content_type=content_type)
    response.headers["Idempotent-Replayed"] = "true"
    return response


def _claim(database: Database, principal: str, key: str, digest: str) -> IdempotencyRecord | None:
    """None when this request now owns the key; otherwise the record of whoever owns it."""
    try:
        with database.unit_of_work() as session:
            session.add(IdempotencyRecord(principal=principal, key=key, request_hash=digest, status=IN_PROGRESS, body=""))
        return None
    except IntegrityError:
        with database.unit_of_work() as session:
            return session.scalar(
                select(IdempotencyRecord).where(IdempotencyRecord.principal == principal, IdempotencyRecord.key == key)
            )


def _record(database: Database, principal: str, key: str, response: web.Response) -> None:
    with database.unit_of_work() as session:
        session.execute(
            update(IdempotencyRecord)
            .where(IdempotencyRecord.principal == principal, IdempotencyRecord.key == key)
            .values(status=response.status, body=response.text or "")
        )


def _release(database: Database, principal: str, key: str) -> None:
    with database.unit_of_work() as session:
        session.execute(
            delete(IdempotencyRecord).where(IdempotencyRecord.principal == principal, IdempotencyRecord.key == key)
        )
