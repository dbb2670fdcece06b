"""The intake's frame: auth, problem+json errors, health, metrics, OpenAPI, Idempotency-Key."""

import asyncio
import json
import threading

import pytest
from aiohttp import web
from sqlalchemy import update

from intake.app import init_app
from intake.bodies import json_response, read_json
from intake.idempotency import idempotent
from shared.api_keys import issue_key
from shared.models import Account

OPERATOR = {"Authorization": "Bearer test-operator-key-0123456789"}


@pytest.fixture
def app(settings, sqlite_database, fake_broker):
    return init_app(settings, database=sqlite_database, broker=fake_broker)


async def test_healthz_needs_no_key(aiohttp_client, app):
    client = await aiohttp_client(app)

    response = await client.get("/healthz")

    assert response.status == 200
    assert await response.json() == {"status": "ok", "database": "ok", "redis": "ok"}


async def test_metrics_are_prometheus_text(aiohttp_client, app):
    client = await aiohttp_client(app)
    await client.get("/healthz")

    response = await client.get("/metrics", headers=OPERATOR)

    assert response.status == 200
    assert 'creditq_http_requests_total{method="GET",route="/healthz",status="200"}' in await response.text()


async def test_openapi_document_lists_the_paths(aiohttp_client, app):
    client = await aiohttp_client(app)

    document = await (await client.get("/v1/openapi.json")).json()

    assert document["openapi"].startswith("3.")
    assert "/healthz" in document["paths"]
    assert document["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"


@pytest.mark.parametrize("header", [None, "Bearer wrong-key", "Basic abc", "Bearer "])
async def test_missing_or_wrong_keys_get_401_problem(aiohttp_client, app, header):
    client = await aiohttp_client(app)

    response = await client.get("/v1/nothing-here", headers={"Authorization": header} if header else {})

    assert response.status == 401
    assert response.content_type == "application/problem+json"
    problem = await response.json()
    assert problem["status"] == 401 and problem["title"] == "Unauthorized" and problem["detail"]


async def test_an_account_key_authenticates(aiohttp_client, app, sqlite_database):
    with sqlite_database.unit_of_work() as session:
        session.add(Account(id="acct_1", name="Grace Church"))
        session.flush()
        key = issue_key(session, "acct_1")
    client = await aiohttp_client(app)

    response = await client.get("/v1/unknown", headers={"Authorization": f"Bearer {key}"})

    assert response.status == 404  # authenticated, then no such route
    assert response.content_type == "application/problem+json"


async def test_unknown_route_and_wrong_method_are_problems(aiohttp_client, app):
    client = await aiohttp_client(app)

    missing = await client.get("/v1/unknown", headers=OPERATOR)
    wrong_method = await client.delete("/healthz")

    assert missing.status == 404 and (await missing.json())["status"] == 404
    assert wrong_method.status == 405 and wrong_method.content_type == "application/problem+json"


def _app_with_counting_route(settings, database, broker):
    """A creating route that counts how often it really ran."""
    app = init_app(settings, database=database, broker=broker)
    calls = []

    @idempotent
    async def create(request: web.Request) -> web.Response:
        body = await read_json(request)
        if body.get("fail"):
            raise web.HTTPBadRequest(text="asked to fail")
        calls.append(body)
        return json_response({"n": len(calls), **body}, status=201)

    app.router.add_post("/v1/things", create)
    return app, calls


async def test_idempotency_key_replays_the_first_answer(aiohttp_client, settings, sqlite_database, fake_broker):
    app, calls = _app_with_counting_route(settings, sqlite_database, fake_broker)
    client = await aiohttp_client(app)
    headers = {**OPERATOR, "Idempotency-Key": "k-1"}

    first = await client.post("/v1/things", json={"a": 1}, headers=headers)
    again = await client.post("/v1/things", json={"a": 1}, headers=headers)
    other_body = await client.post("/v1/things", json={"a": 2}, headers=headers)

    assert first.status == again.status == 201
    assert await first.json() == await again.json() == {"n": 1, "a": 1}
    assert again.headers["Idempotent-Replayed"] == "true"
    assert other_body.status == 409 and other_body.content_type == "application/problem+json"
    assert len(calls) == 1


async def test_without_a_key_every_post_runs(aiohttp_client, settings, sqlite_database, fake_broker):
    app, calls = _app_with_counting_route(settings, sqlite_database, fake_broker)
    client = await aiohttp_client(app)

    await client.post("/v1/things", json={"a": 1}, headers=OPERATOR)
    await client.post("/v1/things", json={"a": 1}, headers=OPERATOR)

    assert len(calls) == 2


@pytest.mark.parametrize("raw", [b"", b"{not json", b"[1, 2]", b"\xff\xfe", b'{"a": "\\ud800"}',
                                 b'{"a": ["x\\u0000"]}', b'{"\\udfff": 1}', b"[" * 100_000 + b"]" * 100_000])
async def test_malformed_bodies_are_400_problems(aiohttp_client, settings, sqlite_database, fake_broker, raw):
    app, calls = _app_with_counting_route(settings, sqlite_database, fake_broker)
    client = await aiohttp_client(app)

    response = await client.post("/v1/things", data=raw, headers={**OPERATOR, "Content-Type": "application/json"})

    assert response.status == 400
    assert json.loads(await response.text())["status"] == 400
    assert calls == []


async def test_health_and_another_tenants_balance_answer_while_a_bulk_write_holds_the_write_lock(
        aiohttp_client, app, sqlite_database):
    with sqlite_database.unit_of_work() as session:
        session.add_all([Account(id="acct_1", name="Importer"), Account(id="acct_2", name="Reader", balance=5000)])
        session.flush()
        reader_key = issue_key(session, "acct_2")
    client = await aiohttp_client(app)
    await client.get("/v1/accounts/acct_2/balance", headers={"Authorization": f"Bearer {reader_key}"})
    writing, answered = threading.Event(), threading.Event()

    def bulk_write():  # one tenant's long unit of work, holding SQLite's write lock until the reads are done
        with sqlite_database.unit_of_work() as session:
            session.execute(update(Account).where(Account.id == "acct_1").values(name="Importing"))
            session.flush()
            writing.set()
            answered.wait(timeout=120)

    writer = threading.Thread(target=bulk_write)
    writer.start()
    await asyncio.to_thread(writing.wait, 60)
    try:
        health = await client.get("/healthz")
        balance = await client.get("/v1/accounts/acct_2/balance", headers={"Authorization": f"Bearer {reader_key}"})
        health_status, balance_status, body = health.status, balance.status, await balance.json()
    finally:
        answered.set()
        await asyncio.to_thread(writer.join)

    assert (health_status, balance_status, body["balance"]) == (200, 200, "5")
