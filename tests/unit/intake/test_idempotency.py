"""Idempotency-Key claims left by a process that died: 409 with Retry-After until the timeout, then released."""

import dataclasses
from datetime import UTC, datetime, timedelta

from aiohttp import web

from intake.app import init_app
from intake.bodies import json_response, read_json
from intake.errors import Problem
from intake.idempotency import idempotent
from shared import idempotency, secrets

OPERATOR = {"Authorization": "Bearer test-operator-key-0123456789"}
T0 = datetime(2026, 11, 10, 12, 0, tzinfo=UTC)


class Clock:
    def __init__(self, now: datetime):
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def app_with_counting_route(settings, database, broker, clock):
    """A creating route that counts how often it really ran; `limited` answers 429 until told otherwise."""
    app = init_app(settings, database=database, broker=broker, clock=clock)
    calls = []
    limited = []

    @idempotent
    async def create(request: web.Request) -> web.Response:
        body = await read_json(request)
        if limited:
            raise Problem(429, "Too Many Requests", "Come back in an hour.", headers={"Retry-After": "3600"})
        calls.append(body)
        return json_response({"n": len(calls), **body}, status=201)

    app.router.add_post("/v1/things", create)
    return app, calls, limited


def digest_of(body: bytes) -> str:
    return secrets.digest(b"POST" + b"/v1/things" + body)


async def test_a_claim_left_by_a_dead_process_is_409_with_retry_after_until_the_timeout_then_released(
        aiohttp_client, settings, sqlite_database, fake_broker):
    # given a process that claimed an Idempotency-Key at T0 and died before answering
    body = b'{"a": 1}'
    assert idempotency.claim(sqlite_database, "operator", "k-1", digest_of(body), now=T0,
                             timeout=timedelta(seconds=60)) is None
    clock = Clock(T0 + timedelta(seconds=10))
    app, calls, _ = app_with_counting_route(settings, sqlite_database, fake_broker, clock)
    client = await aiohttp_client(app)
    headers = {**OPERATOR, "Idempotency-Key": "k-1", "Content-Type": "application/json"}

    # when the client retries 10 s later
    early = await client.post("/v1/things", data=body, headers=headers)

    # then it is told to come back when the claim times out (60 s after it was made), and nothing ran
    assert early.status == 409 and early.content_type == "application/problem+json"
    assert early.headers["Retry-After"] == "50"
    assert calls == []

    # when it retries after the timeout
    clock.now = T0 + timedelta(seconds=61)
    late = await client.post("/v1/things", data=body, headers=headers)
    again = await client.post("/v1/things", data=body, headers=headers)

    # then the request runs once, and its answer is what the key replays from then on
    assert late.status == 201 and await late.json() == {"n": 1, "a": 1}
    assert again.status == 201 and again.headers["Idempotent-Replayed"] == "true"
    assert len(calls) == 1


async def test_the_claim_timeout_is_a_setting(aiohttp_client, settings, sqlite_database, fake_broker):
    # given a 5 s claim timeout and a claim left at T0
    body = b'{"a": 1}'
    idempotency.claim(sqlite_database, "operator", "k-1", digest_of(body), now=T0, timeout=timedelta(seconds=5))
    app, calls, _ = app_with_counting_route(dataclasses.replace(settings, idempotency_claim_timeout_seconds=5),
                                            sqlite_database, fake_broker, Clock(T0 + timedelta(seconds=6)))
    client = await aiohttp_client(app)

    # when the client retries 6 s later, it runs
    response = await client.post("/v1/things", data=body,
                                 headers={**OPERATOR, "Idempotency-Key": "k-1", "Content-Type": "application/json"})

    assert response.status == 201 and len(calls) == 1


async def test_a_429_is_not_remembered_so_the_retry_runs_once_the_limit_resets(
        aiohttp_client, settings, sqlite_database, fake_broker):
    # given a request refused by a limit
    app, calls, limited = app_with_counting_route(settings, sqlite_database, fake_broker, Clock(T0))
    client = await aiohttp_client(app)
    headers = {**OPERATOR, "Idempotency-Key": "k-1"}
    limited.append(True)
    refused = await client.post("/v1/things", json={"a": 1}, headers=headers)

    # when the limit has reset and the client retries with the same key
    limited.clear()
    retried = await client.post("/v1/things", json={"a": 1}, headers=headers)

    # then the retry ran instead of replaying the 429
    assert refused.status == 429 and "Retry-After" in refused.headers
    assert retried.status == 201 and "Idempotent-Replayed" not in retried.headers
    assert len(calls) == 1
