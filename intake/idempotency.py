"""Idempotency-Key on POSTs that create: the same key and body get the first answer again; another body, 409."""

import asyncio
import functools
import hashlib

from aiohttp import web
from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError

from shared.db import Database
from shared.ids import keyed_id
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
        if not 0 < len(key) <= MAX_KEY_LENGTH or not key.isascii() or not key.isprintable():
            raise Problem(400, "Bad Request",
                          f"Idempotency-Key must be 1 to {MAX_KEY_LENGTH} printable ASCII characters.")
        database = request.app[DATABASE]
        principal = request[PRINCIPAL].name
        digest = await _request_digest(request)
        previous = await asyncio.to_thread(_claim, database, principal, key, digest)
        if previous is not None:
            return _replay(previous, digest)
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


async def resumable_id(request: web.Request, prefix: str) -> str | None:
    """The id of what this request creates, the same on every retry of it (same caller, Idempotency-Key and
    body; None without a key): a retry after a crash finds the work its first try began and finishes it."""
    key = request.headers.get("Idempotency-Key")
    if key is None:
        return None
    return keyed_id(prefix, f"{request[PRINCIPAL].name}\n{key}\n{await _request_digest(request)}")


async def _request_digest(request: web.Request) -> str:
    """The request as the key binds it: method, path with its query string (a text/csv campaign names itself
    there), body."""
    return hashlib.sha256(request.method.encode() + request.path_qs.encode() + await request.read()).hexdigest()


def _replay(record: IdempotencyRecord, digest: str) -> web.Response:
    if record.request_hash != digest:
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
