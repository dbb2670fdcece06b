"""A worker process builds its resources when it boots, so its first jobs do not pay for them."""

import sys
from datetime import timedelta

import fakeredis

from shared.messaging.sender_throttle import SenderThrottle
from tests.integration.messaging.test_send_pipeline import FAST


def test_a_booting_worker_process_opens_its_database_connection_and_imports_the_twilio_resources(
        sqlite_database, fake_broker, monkeypatch):
    from workers import resources
    from workers.warm_up import TWILIO_RESOURCES, WarmUp

    # given a worker process's resources, not yet used, and the twilio package's REST resources not imported
    resources.use(resources.Resources(
        database=sqlite_database, gateway_for=None, throttle=SenderThrottle(fakeredis.FakeRedis(), FAST),
        hold_ttl_seconds=900, stale_after=timedelta(seconds=60)))
    for name in [name for name in sys.modules if name.startswith(TWILIO_RESOURCES)]:
        monkeypatch.delitem(sys.modules, name)
    sqlite_database.engine.dispose()
    try:
        # when dramatiq says the process has booted
        fake_broker.add_middleware(WarmUp())
        fake_broker.emit_after("process_boot")
        # then a connection waits in the pool and the resources are imported
        assert sqlite_database.engine.pool.checkedin() == 1
        assert TWILIO_RESOURCES in sys.modules
    finally:
        resources.use(None)
