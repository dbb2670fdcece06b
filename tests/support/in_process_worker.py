"""A dramatiq Worker in the test process, running the workers' real actors on the test broker against `database`,
the Twilio simulator's gateways and a file outbox."""

import contextlib
from datetime import timedelta

import dramatiq
import fakeredis

from shared.billing.payments import SimulatedGateway
from shared.messaging.sender_throttle import SenderThrottle
from tests.integration.messaging.test_send_pipeline import FAST


@contextlib.contextmanager
def in_process_worker(database, gateways, broker, outbox):
    import workers
    from workers import resources
    from workers.payments import Billing, use_billing

    resources.use(resources.Resources(
        database=database, gateway_for=gateways, throttle=SenderThrottle(fakeredis.FakeRedis(), FAST),
        hold_ttl_seconds=900, stale_after=timedelta(seconds=60)))
    use_billing(Billing(SimulatedGateway(), outbox, "http://127.0.0.1"))
    running = dramatiq.Worker(broker, worker_timeout=100)
    running.start()
    try:
        yield workers
    finally:
        running.stop()
        resources.use(None)
        use_billing(None)
