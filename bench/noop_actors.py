"""A no-op actor on the stack's Redis: dramatiq's own throughput, the yardstick for bench/pipeline.py."""

import os

import dramatiq

from shared.broker import make_broker

broker = make_broker(os.environ["REDIS_URL"])
QUEUE = "bench-noop"


@dramatiq.actor(queue_name=QUEUE, max_retries=0)
def noop() -> None:
    pass
