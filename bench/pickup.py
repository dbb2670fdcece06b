"""How long a job waits, on a quiet system, before a worker starts it (`python bench/pickup.py [--jobs 20]`).

A dramatiq consumer that finds its queue empty polls Redis again after a sleep that doubles up to the worker's
timeout (1 s), so a job enqueued on a queue idle for a while waits up to that long. The broker polls the queues a
person waits on (shared.broker.PROMPT_QUEUES: a text sent, a call placed, a campaign started) at most every
PROMPT_POLL_MS. Here one worker (the real broker class, an embedded Redis) serves a prompt queue (`send`) and a
queue left at dramatiq's back-off (`settle`), each job enqueued after the queues sat idle 1-2 s; prints the wait's
percentiles for each, and what an idle worker serving one of them alone costs Redis a second. Asserts nothing.
"""

import argparse
import os
import random
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import dramatiq  # noqa: E402
import redis  # noqa: E402

from bench.processes import percentile  # noqa: E402
from shared.broker import PROMPT_QUEUES, make_broker  # noqa: E402
from shared.embedded_redis import EmbeddedRedis  # noqa: E402


def broker_recording_into(url: str, waits: dict[str, list[float]], started: threading.Event):
    """A broker with an actor on each queue of `waits` that records how long its job waited."""
    broker = make_broker(url, install=False)

    def record(queue: str, enqueued_at: float) -> None:
        waits[queue].append(time.time() - enqueued_at)
        started.set()

    return broker, {queue: dramatiq.actor(record, broker=broker, queue_name=queue, actor_name=f"bench_{queue}")
                    for queue in waits}


def idle_commands(server: EmbeddedRedis, queue: str, seconds: float = 5) -> float:
    """Redis commands a second of a worker serving only `queue`, idle (its consumer's and its delay queue's polls,
    and its heartbeats)."""
    broker, _ = broker_recording_into(server.url, {queue: []}, threading.Event())
    worker = dramatiq.Worker(broker, worker_threads=1)
    worker.start()
    try:
        time.sleep(2)
        client = redis.Redis.from_url(server.url)
        before = client.info("stats")["total_commands_processed"]
        time.sleep(seconds)
        return (client.info("stats")["total_commands_processed"] - before - 1) / seconds
    finally:
        worker.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=20, help="jobs a queue")
    args = parser.parse_args()
    waits: dict[str, list[float]] = {"send": [], "settle": []}
    with tempfile.TemporaryDirectory() as directory:
        server = EmbeddedRedis(Path(directory)).start()
        try:
            idle = {queue: idle_commands(server, queue) for queue in waits}
            started = threading.Event()
            broker, actors = broker_recording_into(server.url, waits, started)
            worker = dramatiq.Worker(broker, worker_threads=2)
            worker.start()
            try:
                for _ in range(args.jobs):
                    for queue, actor in actors.items():
                        time.sleep(random.uniform(1.0, 2.0))
                        started.clear()
                        actor.send(queue, time.time())
                        started.wait(5)
            finally:
                worker.stop()
        finally:
            server.stop()
    print(f"a job's wait before a worker starts it, the queue idle 1-2 s before ({args.jobs} jobs a queue; load "
          f"average {os.getloadavg()[0]:.2f}), and the Redis commands a second of a worker serving the queue alone, "
          "idle")
    for queue, values in waits.items():
        kind = "prompt (PROMPT_QUEUES)" if queue in PROMPT_QUEUES else "dramatiq's backoff (baseline)"
        print(f"  {queue:7} {kind:30} p50 {1000 * statistics.median(values):4.0f} ms   "
              f"p90 {1000 * percentile(values, 0.9):4.0f} ms   max {1000 * max(values):4.0f} ms   "
              f"idle {idle[queue]:3.0f} commands/s")


if __name__ == "__main__":
    main()
