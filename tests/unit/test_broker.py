"""dramatiq's own RedisBroker runs our jobs on fakeredis[lua], the same code path as on a real Redis."""

import dramatiq
import fakeredis
import pytest
from dramatiq.brokers.rabbitmq import RabbitmqBroker
from dramatiq.brokers.redis import RedisBroker

from shared.broker import broker_for, redis_beside
from shared.config import ConfigError
from tests.support.brokers import install_broker


def _run_jobs(broker, count: int) -> list[int]:
    done: list[int] = []

    @dramatiq.actor(broker=broker, actor_name=f"record_{id(broker)}", queue_name="broker-test", max_retries=3, min_backoff=10, max_backoff=10)
    def record(n: int) -> None:
        if n == 0 and 0 not in done:
            done.append(0)
            raise RuntimeError("first delivery fails; the retry must succeed")
        done.append(n)

    for n in range(count):
        record.send(n)
    worker = dramatiq.Worker(broker, worker_timeout=50)
    worker.start()
    try:
        broker.join("broker-test", timeout=20_000)
        worker.join()
    finally:
        worker.stop()
    return done


def test_jobs_run_and_failures_are_retried_on_fakeredis():
    broker = install_broker(fakeredis.FakeRedis())

    done = _run_jobs(broker, 20)

    assert sorted(done) == [0, *range(20)]  # job 0 ran twice: failed once, then retried


def test_the_environment_chooses_the_broker_and_redis_is_beside_it_either_way():
    # Given the same Redis and either broker choice (nothing connects until a job is sent)
    redis_url = "redis://cache.internal:6380/2"
    on_redis = broker_for({"REDIS_URL": redis_url}, install=False)
    on_rabbitmq = broker_for({"REDIS_URL": redis_url, "CREDITQ_BROKER": "rabbitmq",
                              "AMQP_URL": "amqp://creditq:secret@mq.internal:5672/creditq"}, install=False)

    # Then the jobs queue where CREDITQ_BROKER says
    assert isinstance(on_redis, RedisBroker) and isinstance(on_rabbitmq, RabbitmqBroker)
    assert on_rabbitmq.confirm_delivery  # an enqueue that returned is on the server
    assert (on_rabbitmq.parameters.host, on_rabbitmq.parameters.port) == ("mq.internal", 5672)
    # And the throttles and rate limits reach the same Redis with either
    for broker in (on_redis, on_rabbitmq):
        kwargs = redis_beside(broker).connection_pool.connection_kwargs
        assert (kwargs["host"], kwargs["port"], kwargs["db"]) == ("cache.internal", 6380, 2)


def test_rabbitmq_without_redis_is_refused():
    with pytest.raises(ConfigError, match="REDIS_URL is not set"):
        broker_for({"CREDITQ_BROKER": "rabbitmq", "AMQP_URL": "amqp://mq.internal"}, install=False)
