"""The web process's threads for database work and its PostgreSQL pool: a connection kept for each thread, none
opened under load."""

import asyncio

import pytest
from sqlalchemy import event

from intake.app import init_app
from intake.appkeys import DATABASE
from shared.config import load_settings

pytestmark = pytest.mark.postgres


async def test_the_pool_keeps_a_connection_per_thread_and_opens_none_under_load(aiohttp_client, tmp_path,
                                                                                postgres_server, fake_broker):
    # given a web app on PostgreSQL with 4 threads for database work
    settings = load_settings({"CREDITQ_DATA_DIR": str(tmp_path / "data"), "CREDITQ_WEB_THREADS": "4",
                              "DATABASE_URL": postgres_server.create_database("web_threads"),
                              "CREDITQ_ADMIN_KEY": "test-operator-key-0123456789"})
    client = await aiohttp_client(init_app(settings, broker=fake_broker))
    opened = []
    event.listen(client.app[DATABASE].engine, "connect", lambda *_: opened.append(True))

    # when 40 health checks (each a database read in one of those threads) arrive at once, twice
    first = await asyncio.gather(*(client.get("/healthz") for _ in range(40)))
    opened_by_the_first = len(opened)
    second = await asyncio.gather(*(client.get("/healthz") for _ in range(40)))

    # then every one is answered, at most one connection was opened per thread, and the second wave opened none
    assert [answer.status for answer in [*first, *second]] == [200] * 80
    assert 1 <= opened_by_the_first <= 4
    assert len(opened) == opened_by_the_first
