"""A stopping worker puts back every job it fetched and did not start, not only those already in its work queue."""

from queue import PriorityQueue

from dramatiq import Message
from dramatiq.worker import ConsumerThread


def acquired(client) -> set[bytes]:
    """Jobs some worker holds: fetched from their queue and not yet acked."""
    return {job for key in client.keys("dramatiq:__acks__.*") for job in client.smembers(key)}


def test_a_consumer_stopped_between_two_hand_overs_puts_back_the_rest_of_its_batch(fake_broker):
    from workers.prefetched_jobs import PutBackPrefetched

    # given three jobs, fetched by a consumer in one batch, of which it handed only the first to a worker thread
    fake_broker.declare_queue("drain")
    jobs = [fake_broker.enqueue(Message(queue_name="drain", actor_name="noop", args=(n,), kwargs={}, options={}))
            for n in range(3)]
    thread = ConsumerThread(broker=fake_broker, queue_name="drain", prefetch=3, work_queue=PriorityQueue(),
                             worker_timeout=100)
    thread.consumer = fake_broker.consume("drain", prefetch=3, timeout=100)
    handed = next(thread.consumer)
    client = fake_broker.client
    assert client.llen("dramatiq:drain") == 0 and len(acquired(client)) == 3

    # when the consumer thread shuts down
    fake_broker.add_middleware(PutBackPrefetched())
    fake_broker.emit_before("consumer_thread_shutdown", thread)

    # then the two it never handed over wait on their queue again, only the started one stays held
    ids = [job.options["redis_message_id"].encode() for job in jobs]
    assert handed.options["redis_message_id"].encode() == ids[0]
    assert sorted(client.lrange("dramatiq:drain", 0, -1)) == sorted(ids[1:])
    assert acquired(client) == {ids[0]}
    # and a second shutdown signal puts nothing back twice
    fake_broker.emit_before("consumer_thread_shutdown", thread)
    assert client.llen("dramatiq:drain") == 2
