"""Per-account rate limits on the real embedded redis-server, shared by two web apps as by two web processes."""

import asyncio

import pytest
import redis

from intake.app import init_app
from tests.support.brokers import install_broker
from tests.unit.intake.test_rate_limit import settings_with, statuses, two_keys

pytestmark = pytest.mark.redis


@pytest.fixture
def real_broker(embedded_redis):
    client = redis.Redis.from_url(embedded_redis.url)
    client.flushall()
    broker = install_broker(client)
    yield broker
    broker.close()


async def test_a_key_past_its_limit_on_either_process_gets_429_and_other_accounts_keys_do_not(
        aiohttp_client, tmp_path, sqlite_database, real_broker):
    # given two web apps on one real Redis, a burst of 3, and two account keys
    settings = settings_with(tmp_path, CREDITQ_KEY_RATE_LIMIT="0.01", CREDITQ_KEY_RATE_BURST="3")
    one = await aiohttp_client(init_app(settings, database=sqlite_database, broker=real_broker))
    other = await aiohttp_client(init_app(settings, database=sqlite_database, broker=real_broker))
    first, second = two_keys(sqlite_database)

    # when the first key spends its burst across both and asks once more
    spent = [*await statuses(one, first, 2), *await statuses(other, first, 1)]
    refused = await other.get("/v1/accounts/acct_1", headers=first)

    # then the fourth request is refused for about one interval (100 s), on Redis' clock
    assert spent == [200, 200, 200]
    assert refused.status == 429 and 95 <= int(refused.headers["Retry-After"]) <= 100
    # and the second key is untouched
    assert await statuses(one, second, 3, "acct_2") == [200, 200, 200]


async def test_checks_made_together_go_to_redis_as_one_script_call_a_round_trip(aiohttp_client, tmp_path,
                                                                               sqlite_database, real_broker):
    # given a burst of 5, one request made (the key is in the web's cache), and Redis' command counts reset
    settings = settings_with(tmp_path, CREDITQ_KEY_RATE_LIMIT="0.001", CREDITQ_KEY_RATE_BURST="5")
    client = await aiohttp_client(init_app(settings, database=sqlite_database, broker=real_broker))
    key, _ = two_keys(sqlite_database)
    assert await statuses(client, key, 1) == [200]
    real_broker.client.config_resetstat()

    # when 11 more of its requests arrive at once
    answers = await asyncio.gather(*(client.get("/v1/accounts/acct_1", headers=key) for _ in range(11)))

    # then the burst's 4 left pass, and their checks shared script calls (one EVALSHA carries a round trip's keys)
    assert sorted(answer.status for answer in answers) == [200] * 4 + [429] * 7
    assert real_broker.client.info("commandstats")["cmdstat_evalsha"]["calls"] < 11
