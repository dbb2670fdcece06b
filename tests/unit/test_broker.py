"""dramatiq's own RedisBroker runs our jobs on fakeredis[lua], the same code path as on a real Redis."""

import json
import os
import uuid

import dramatiq
import fakeredis
import pytest
from dramatiq.brokers.rabbitmq import RabbitmqBroker
from dramatiq.brokers.redis import RedisBroker

from shared.broker import (
    PIPELINE_BATCH,
    PROMPT_POLL_MS,
    FastJSONEncoder,
    broker_for,
    enqueue_many,
    redis_beside,
)
from shared.config import ConfigError
from tests.support.brokers import EnqueueRecorder, install_broker


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


def test_enqueue_many_stores_what_send_would_in_order_across_batches_and_delayed_ones_on_the_delay_queue():
    # given a broker whose middleware records each enqueue, and an actor
    client = fakeredis.FakeRedis()
    broker = install_broker(client)
    recorder = EnqueueRecorder()
    broker.add_middleware(recorder)

    @dramatiq.actor(broker=broker, actor_name="bulk", queue_name="bulk-test")
    def bulk(n: int) -> None:
        pass

    # when more than two batches are enqueued at once, every 1,000th of them delayed by a minute, then one sent
    count = 2 * PIPELINE_BATCH + 500
    delays = [60_000 if n % 1000 == 999 else None for n in range(count)]
    enqueue_many(bulk, [(n,) for n in range(count)], delays=delays)
    single = bulk.send(-1)

    # then the queue holds the undelayed ones in order, then the one sent, each stored as send stores it
    ids = [raw.decode() for raw in client.lrange("dramatiq:bulk-test", 0, -1)]
    stored = [json.loads(client.hget("dramatiq:bulk-test.msgs", id_)) for id_ in ids]
    assert [message["args"] for message in stored] == [[n] for n in range(count) if delays[n] is None] + [[-1]]
    assert len({tuple(sorted(m)) for m in stored}) == 1 and {tuple(sorted(m["options"])) for m in stored} == {
        ("redis_message_id",)}
    assert ids == [m["options"]["redis_message_id"] for m in stored] and len(set(ids)) == len(ids)
    assert stored[-1]["message_id"] == single.message_id
    # and every id, the message's own and Redis's, is a distinct random UUID written as dramatiq writes them
    every_id = ids + [m["message_id"] for m in stored]
    assert len(set(every_id)) == len(every_id)
    assert all(str(uuid.UUID(id_)) == id_ and uuid.UUID(id_).version == 4 for id_ in every_id)
    # and the delayed ones wait on the delay queue with their eta a minute away, on Redis's clock (the timestamp is
    # this process's)
    delayed = [json.loads(raw) for raw in client.hvals("dramatiq:bulk-test.DQ.msgs")]
    assert sorted(m["args"][0] for m in delayed) == [999, 1999]
    assert all(m["options"]["eta"] - broker.clock.offset_ms() - m["message_timestamp"] >= 60_000 for m in delayed)
    assert client.llen("dramatiq:bulk-test.DQ") == 2
    # and the middleware saw every one, as it would each send
    assert len(recorder.messages) == count + 1


@pytest.mark.parametrize("args", [("msg_01",), (42, None, "é ✓"), ({"to": "+14155550100", "n": [1, 2]},), (2**70 + 1,),
                                  (-(2**63) - 1, 2**64)])
def test_messages_read_the_same_by_dramatiqs_json_encoder_and_ours_either_way(args):
    # given a message, and dramatiq's own JSON encoder beside ours
    message = dramatiq.Message(queue_name="send", actor_name="send_message", args=args, kwargs={},
                               options={"redis_message_id": "r1", "retries": 2})
    ours, theirs = FastJSONEncoder(), dramatiq.JSONEncoder()

    # when each writes it and the other reads it, then each reads back what was written (an integer past 64 bits
    # too, which orjson refuses to write)
    expected = json.loads(json.dumps(message.asdict()))
    assert theirs.decode(ours.encode(message.asdict())) == expected
    assert ours.decode(theirs.encode(message.asdict())) == expected


def test_bytes_that_are_not_json_are_dramatiqs_decode_error():
    with pytest.raises(dramatiq.errors.DecodeError):
        FastJSONEncoder().decode(b"\xff not json")


def test_arguments_that_are_not_jsons_own_types_are_refused_as_dramatiqs_encoder_refuses_them():
    from datetime import UTC, datetime

    message = {"args": [datetime.now(UTC)], "kwargs": {}}
    for encoder in (dramatiq.JSONEncoder(), FastJSONEncoder()):
        with pytest.raises(TypeError):
            encoder.encode(message)


def idle_sleeps(broker, queue_name: str, monkeypatch, polls: int = 12) -> list[float]:
    """The sleeps (ms) of a consumer of the worker's default timeout (1 s) polling its empty queue `polls` times."""
    import dramatiq.brokers.redis as redis_broker

    sleeps: list[float] = []
    monkeypatch.setattr(redis_broker.time, "sleep", lambda seconds: sleeps.append(seconds * 1000))
    consumer = broker.consume(queue_name, prefetch=1, timeout=1000)
    for _ in range(polls):
        assert next(consumer) is None
    return sleeps


def test_a_consumer_of_a_queue_a_person_waits_on_polls_it_empty_within_a_tenth_of_a_second(monkeypatch):
    # given the broker, its queues empty
    broker = install_broker(fakeredis.FakeRedis())

    # when idle consumers of the texts' queue and of the settlements' poll a dozen times each
    send, settle = idle_sleeps(broker, "send", monkeypatch), idle_sleeps(broker, "settle", monkeypatch)

    # then the texts' consumer never sleeps longer than PROMPT_POLL_MS, the settlements' backs off past it to 1 s
    assert max(send) <= PROMPT_POLL_MS and max(settle) > 5 * PROMPT_POLL_MS


def test_a_process_forked_after_the_broker_was_built_has_an_id_of_its_own():
    # given the broker, built before the fork (as `creditq worker` builds it before dramatiq forks its processes)
    broker = install_broker(fakeredis.FakeRedis())
    read_end, write_end = os.pipe()

    # when a process is forked and reads its broker's id
    child = os.fork()
    if child == 0:  # pragma: no cover (the child's own lines)
        try:
            os.write(write_end, broker.broker_id.encode())
        finally:
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as answer:
        childs_id = answer.read().decode()
    os.waitpid(child, 0)

    # then the child's heartbeats and fetched jobs are named by an id of its own, and the parent's is unchanged
    assert childs_id and childs_id != broker.broker_id
    assert uuid.UUID(childs_id)
