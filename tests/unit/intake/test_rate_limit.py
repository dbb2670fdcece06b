"""Per-account request rate limits in Redis (fakeredis with Lua here; tests/integration has the real server)."""

import asyncio

import fakeredis
import pytest

from intake.app import init_app
from shared.api_keys import issue_key
from shared.config import load_settings
from shared.models import Account
from tests.support.brokers import install_broker

OPERATOR = {"Authorization": "Bearer test-operator-key-0123456789"}


def settings_with(tmp_path, **env):
    return load_settings({"CREDITQ_DATA_DIR": str(tmp_path / "data"), "DATABASE_URL": f"sqlite:///{tmp_path / 'x.db'}",
                          "CREDITQ_ADMIN_KEY": "test-operator-key-0123456789", **env})


def two_keys(database) -> tuple[dict, dict]:
    with database.unit_of_work() as session:
        session.add_all([Account(id="acct_1", name="Grace Church"), Account(id="acct_2", name="Acme Realty")])
        session.flush()
        return ({"Authorization": f"Bearer {issue_key(session, 'acct_1')}"},
                {"Authorization": f"Bearer {issue_key(session, 'acct_2')}"})


async def statuses(client, headers: dict, count: int, account_id: str = "acct_1") -> list[int]:
    return [(await client.get(f"/v1/accounts/{account_id}", headers=headers)).status for _ in range(count)]


async def test_a_key_past_its_burst_gets_429_with_retry_after_and_other_accounts_keys_are_unaffected(
        aiohttp_client, tmp_path, sqlite_database, fake_broker):
    # given a limit of one request every 1,000 s in bursts of 2, and two account keys
    settings = settings_with(tmp_path, CREDITQ_KEY_RATE_LIMIT="0.001", CREDITQ_KEY_RATE_BURST="2")
    client = await aiohttp_client(init_app(settings, database=sqlite_database, broker=fake_broker))
    first, second = two_keys(sqlite_database)

    # when the first key makes three requests at once
    answers = [await client.get("/v1/accounts/acct_1", headers=first) for _ in range(3)]

    # then the third is refused with a problem saying when to come back ...
    assert [answer.status for answer in answers] == [200, 200, 429]
    refused = answers[2]
    assert refused.content_type == "application/problem+json"
    assert 990 <= int(refused.headers["Retry-After"]) <= 1000
    assert (await refused.json())["status"] == 429
    # ... while the other account's key still has its own burst
    assert await statuses(client, second, 2, "acct_2") == [200, 200]


async def test_an_accounts_keys_share_one_budget_so_more_keys_buy_no_more_requests(
        aiohttp_client, tmp_path, sqlite_database, fake_broker):
    # given a limit of one request every 1,000 s in bursts of 2, and an account that made itself three keys
    settings = settings_with(tmp_path, CREDITQ_KEY_RATE_LIMIT="0.001", CREDITQ_KEY_RATE_BURST="2")
    client = await aiohttp_client(init_app(settings, database=sqlite_database, broker=fake_broker))
    first, other_account = two_keys(sqlite_database)
    with sqlite_database.unit_of_work() as session:
        more = [{"Authorization": f"Bearer {issue_key(session, 'acct_1')}"} for _ in range(2)]

    # when each of its keys makes a request in turn
    answers = [await client.get("/v1/accounts/acct_1", headers=key) for key in (first, *more)]

    # then the third is refused, whichever key made it, naming the account's budget
    assert [answer.status for answer in answers] == [200, 200, 429]
    assert "account" in (await answers[2].json())["detail"]
    # and another account is not touched by it
    assert await statuses(client, other_account, 2, "acct_2") == [200, 200]


async def test_requests_checked_together_share_the_burst_exactly(aiohttp_client, tmp_path, sqlite_database,
                                                                 fake_broker):
    # given a burst of 5 and one key
    settings = settings_with(tmp_path, CREDITQ_KEY_RATE_LIMIT="0.001", CREDITQ_KEY_RATE_BURST="5")
    client = await aiohttp_client(init_app(settings, database=sqlite_database, broker=fake_broker))
    key, _ = two_keys(sqlite_database)

    # when 12 of its requests arrive at once (their checks travel to Redis together)
    answers = await asyncio.gather(*(client.get("/v1/accounts/acct_1", headers=key) for _ in range(12)))

    # then exactly 5 pass and the other 7 are told when to come back
    assert sorted(answer.status for answer in answers) == [200] * 5 + [429] * 7


async def test_a_redis_that_lost_the_script_is_given_it_again(aiohttp_client, tmp_path, sqlite_database, fake_broker):
    # given a burst of 2, one request counted, then a Redis that forgot its scripts (a restart, SCRIPT FLUSH)
    settings = settings_with(tmp_path, CREDITQ_KEY_RATE_LIMIT="0.001", CREDITQ_KEY_RATE_BURST="2")
    client = await aiohttp_client(init_app(settings, database=sqlite_database, broker=fake_broker))
    key, _ = two_keys(sqlite_database)
    first = await statuses(client, key, 1)
    fake_broker.client.script_flush()

    # when the key asks twice more
    then = await statuses(client, key, 2)

    # then the limit still counts: the burst's second request passes, the third is refused
    assert first + then == [200, 200, 429]


async def test_the_operator_key_is_exempt_unless_limited_on_its_own(aiohttp_client, tmp_path, sqlite_database,
                                                                   fake_broker):
    tight = {"CREDITQ_KEY_RATE_LIMIT": "0.001", "CREDITQ_KEY_RATE_BURST": "1"}
    exempt = await aiohttp_client(init_app(settings_with(tmp_path, **tight), database=sqlite_database,
                                           broker=fake_broker))
    two_keys(sqlite_database)
    assert await statuses(exempt, OPERATOR, 5) == [200] * 5

    limited = await aiohttp_client(init_app(
        settings_with(tmp_path, **tight, CREDITQ_OPERATOR_RATE_LIMIT="0.001", CREDITQ_OPERATOR_RATE_BURST="3"),
        database=sqlite_database, broker=fake_broker))
    assert await statuses(limited, OPERATOR, 4) == [200, 200, 200, 429]


async def test_the_limit_is_shared_by_web_processes_on_the_same_redis(aiohttp_client, tmp_path, sqlite_database,
                                                                     fake_broker):
    # given two web processes on one Redis, and a burst of 2
    settings = settings_with(tmp_path, CREDITQ_KEY_RATE_LIMIT="0.001", CREDITQ_KEY_RATE_BURST="2")
    one = await aiohttp_client(init_app(settings, database=sqlite_database, broker=fake_broker))
    other = await aiohttp_client(init_app(settings, database=sqlite_database, broker=fake_broker))
    key, _ = two_keys(sqlite_database)

    # when the key's requests are spread over both
    spread = [*await statuses(one, key, 1), *await statuses(other, key, 1), *await statuses(one, key, 1)]

    # then they share one budget
    assert spread == [200, 200, 429]


async def test_without_redis_the_limit_is_not_enforced_rather_than_the_api_down(aiohttp_client, tmp_path,
                                                                                 sqlite_database):
    # given a Redis that does not answer
    server = fakeredis.FakeServer()
    server.connected = False
    broker = install_broker(fakeredis.FakeRedis(server=server))
    settings = settings_with(tmp_path, CREDITQ_KEY_RATE_LIMIT="0.001", CREDITQ_KEY_RATE_BURST="1")
    client = await aiohttp_client(init_app(settings, database=sqlite_database, broker=broker))
    key, _ = two_keys(sqlite_database)

    # then requests still pass
    assert await statuses(client, key, 3) == [200, 200, 200]
    broker.close()


@pytest.mark.parametrize("rate", ["0", "0.0"])
async def test_a_rate_of_zero_turns_the_limit_off(aiohttp_client, tmp_path, sqlite_database, fake_broker, rate):
    settings = settings_with(tmp_path, CREDITQ_KEY_RATE_LIMIT=rate, CREDITQ_KEY_RATE_BURST="1")
    client = await aiohttp_client(init_app(settings, database=sqlite_database, broker=fake_broker))
    key, _ = two_keys(sqlite_database)

    assert await statuses(client, key, 3) == [200, 200, 200]
