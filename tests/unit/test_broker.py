"""dramatiq's own RedisBroker runs our jobs on fakeredis[lua], the same code path as on a real Redis."""

import dramatiq
import fakeredis

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
