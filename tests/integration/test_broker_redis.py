"""The same broker on the real embedded redis-server."""

import pytest
import redis

from tests.support.brokers import install_broker
from tests.unit.test_broker import _run_jobs

pytestmark = pytest.mark.redis


def test_jobs_run_and_failures_are_retried_on_the_embedded_redis(embedded_redis):
    client = redis.Redis.from_url(embedded_redis.url)
    client.flushall()
    broker = install_broker(client)

    done = _run_jobs(broker, 20)

    assert sorted(done) == [0, *range(20)]
