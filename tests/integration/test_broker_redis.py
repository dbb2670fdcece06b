"""The same broker on the real embedded redis-server."""

import json

import dramatiq
import pytest
import redis

from shared.broker import enqueue_many
from tests.support.brokers import install_broker
from tests.unit.test_broker import _run_jobs

pytestmark = pytest.mark.redis


def test_jobs_run_and_failures_are_retried_on_the_embedded_redis(embedded_redis):
    client = redis.Redis.from_url(embedded_redis.url)
    client.flushall()
    broker = install_broker(client)

    done = _run_jobs(broker, 20)

    assert sorted(done) == [0, *range(20)]


def test_a_batch_of_sends_for_one_queue_costs_one_command_and_survives_a_server_without_the_script(embedded_redis):
    # given a broker on the real server and an actor
    client = redis.Redis.from_url(embedded_redis.url)
    client.flushall()
    broker = install_broker(client)

    @dramatiq.actor(broker=broker, actor_name="bulk_on_redis", queue_name="bulk-redis")
    def bulk(n: int) -> None:
        pass

    enqueue_many(bulk, [(-1,)])  # the script is loaded once
    client.config_resetstat()

    # when a batch is enqueued
    enqueue_many(bulk, [(n,) for n in range(50)])

    # then the client sent one command for it, the script by its digest: no SCRIPT EXISTS round trip before it
    # (the statistics also count the script's own HSET and RPUSH, and CONFIG RESETSTAT)
    commands = {name.removeprefix("cmdstat_"): stats["calls"] for name, stats in client.info("commandstats").items()}
    assert commands["evalsha"] == 1
    assert set(commands) == {"evalsha", "hset", "rpush", "config"}
    # and when the server lost its scripts (a restart, a flush), the next batch loads the script and lands too
    client.script_flush()
    enqueue_many(bulk, [(n,) for n in range(50, 60)])
    ids = client.lrange("dramatiq:bulk-redis", 0, -1)
    stored = [json.loads(client.hget("dramatiq:bulk-redis.msgs", id_)) for id_ in ids]
    assert [message["args"] for message in stored] == [[-1]] + [[n] for n in range(60)]
