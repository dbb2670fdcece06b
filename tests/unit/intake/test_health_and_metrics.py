"""Readiness fails when the database or Redis is away, liveness does not; /metrics is the operator's."""

import pytest
from dramatiq.brokers.redis import RedisBroker

from intake.app import init_app
from shared.api_keys import issue_key
from shared.db import Database
from shared.models import Account
from tests.support.ports import free_port

OPERATOR = {"Authorization": "Bearer test-operator-key-0123456789"}


@pytest.fixture
def redis_away() -> RedisBroker:
    """A broker whose Redis listens nowhere (never made the global broker)."""
    broker = RedisBroker(url=f"redis://127.0.0.1:{free_port()}/0")
    yield broker
    broker.close()


@pytest.fixture
def database_away() -> Database:
    """A PostgreSQL that listens nowhere: every connection is refused."""
    database = Database(f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/creditq")
    yield database
    database.dispose()


async def test_ready_when_the_database_and_redis_answer(aiohttp_client, settings, sqlite_database, fake_broker):
    client = await aiohttp_client(init_app(settings, database=sqlite_database, broker=fake_broker))

    response = await client.get("/healthz")

    assert response.status == 200
    assert await response.json() == {"status": "ok", "database": "ok", "redis": "ok"}


async def test_redis_away_fails_readiness_with_503_but_not_liveness(aiohttp_client, settings, sqlite_database,
                                                                   redis_away):
    client = await aiohttp_client(init_app(settings, database=sqlite_database, broker=redis_away))

    ready, live = await client.get("/healthz"), await client.get("/livez")

    assert ready.status == 503 and ready.headers["Retry-After"]
    assert (await ready.json())["away"] == ["redis"]
    assert live.status == 200


async def test_the_database_away_fails_readiness_with_503_but_not_liveness(aiohttp_client, settings, database_away,
                                                                          fake_broker):
    client = await aiohttp_client(init_app(settings, database=database_away, broker=fake_broker))

    ready, live = await client.get("/healthz"), await client.get("/livez")

    assert ready.status == 503 and ready.content_type == "application/problem+json"
    assert (await ready.json())["away"] == ["database"]
    assert live.status == 200


async def test_metrics_are_not_public_nor_an_account_keys(aiohttp_client, settings, sqlite_database, fake_broker):
    # given an account with its own key
    with sqlite_database.unit_of_work() as session:
        session.add(Account(id="acct_1", name="Grace"))
        session.flush()
        account_key = issue_key(session, "acct_1", name="default")
    client = await aiohttp_client(init_app(settings, database=sqlite_database, broker=fake_broker))

    anonymous = await client.get("/metrics")
    tenant = await client.get("/metrics", headers={"Authorization": f"Bearer {account_key}"})
    operator = await client.get("/metrics", headers=OPERATOR)

    assert anonymous.status == 401 and tenant.status == 403
    text = await operator.text()
    assert operator.status == 200
    assert "creditq_holds_outstanding 0.0" in text and "creditq_accounts 1.0" in text
    assert "creditq_http_requests_total" in text


async def test_requests_while_the_database_is_away_get_503_with_retry_after_not_500(aiohttp_client, settings,
                                                                                   database_away, fake_broker):
    # given a web process whose database refuses every connection
    client = await aiohttp_client(init_app(settings, database=database_away, broker=fake_broker))

    # when a key sends a message and the operator creates an account
    send = await client.post("/v1/messages", headers={"Authorization": "Bearer ck_live_not_checkable_now"},
                             json={"to": "+14155550100", "from": "+14155550000", "body": "hello"})
    create = await client.post("/v1/accounts", headers=OPERATOR, json={"name": "Acme", "timezone": "UTC"})

    # then both are told to come back (problem+json, Retry-After), and nothing says the server broke
    for response in (send, create):
        assert response.status == 503 and response.content_type == "application/problem+json"
        assert int(response.headers["Retry-After"]) > 0
        assert (await response.json())["title"] == "Service Unavailable"
