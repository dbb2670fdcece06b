"""A tenant whose webhook endpoint answers slowly holds a few of the worker's threads, not all of them: its other
deliveries wait their turn without a thread, and another tenant's deliveries go out meanwhile."""

import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import dramatiq
import fakeredis
import pytest
import redis
from sqlalchemy import select

from shared.config import WebhookSettings
from shared.events import outbox
from shared.events.endpoints import create_endpoint
from shared.events.slots import SLOW_KEY_PREFIX, AccountSlots
from shared.messaging.sender_throttle import SenderThrottle
from shared.models import Account, WebhookDelivery, WebhookEndpoint
from tests.integration.messaging.test_send_pipeline import FAST

SLOTS, THREADS = 2, 8


class SlowReceiver:
    """An endpoint that answers each POST after `seconds`, keeping how many it was answering at once at most."""

    def __init__(self, seconds: float):
        self.under_way = self.most = 0
        lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                self.rfile.read(int(self.headers["Content-Length"]))
                with lock:
                    receiver.under_way += 1
                    receiver.most = max(receiver.most, receiver.under_way)
                time.sleep(seconds)
                with lock:
                    receiver.under_way -= 1
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_port}/hooks"

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receivers():
    started = []
    yield lambda seconds: started.append(SlowReceiver(seconds)) or started[-1]
    for receiver in started:
        receiver.close()


def account_with_endpoint(database, url: str) -> str:
    """A new account with an endpoint at `url` taking balance.low."""
    account_id = f"acct_{uuid.uuid4().hex[:12]}"
    with database.unit_of_work() as session:
        session.add(Account(id=account_id, name=account_id))
        session.flush()
        create_endpoint(session, account_id, url=url, events=["balance.low"], description=None,
                        now=datetime.now(UTC))
    return account_id


def emitted(database, account_id: str, count: int) -> None:
    """`count` balance.low events of the account, written as a settlement writes them: the outbox hands them to
    dispatch_webhook_event, which enqueues their deliveries."""
    with database.unit_of_work() as session:
        for _ in range(count):
            outbox.emit(session, "balance.low", account_id=account_id, key=f"balance.low:{uuid.uuid4().hex}",
                        data={}, now=datetime.now(UTC))


def statuses(database, account_id: str) -> list[str]:
    with database.unit_of_work() as session:
        return list(session.scalars(select(WebhookDelivery.status).join(WebhookEndpoint)
                                    .where(WebhookEndpoint.account_id == account_id)))


def wait_until(condition, seconds: float = 60.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "gave up waiting"
        time.sleep(0.05)


@pytest.mark.redis
def test_a_tenant_whose_endpoint_answers_slowly_holds_a_few_threads_and_another_tenants_deliveries_go_out(
        database, fake_broker, receivers, embedded_redis):
    import workers  # noqa: F401  (declares the actors on the broker)
    from workers import resources

    # given a worker of 8 threads, each account allowed 2 attempts at once once one of its attempts was slow (the
    # slots on the real Redis: its scripts run atomically, fakeredis's not between threads)
    slots_redis = redis.Redis.from_url(embedded_redis.url)
    resources.use(resources.Resources(
        database=database, gateway_for=None, throttle=SenderThrottle(fakeredis.FakeRedis(), FAST),
        hold_ttl_seconds=900, stale_after=timedelta(seconds=60), development=True,
        webhooks=WebhookSettings(timeout_seconds=5), webhook_slots=AccountSlots(slots_redis, SLOTS,
                                                                               slow_seconds=0.3)))
    worker = dramatiq.Worker(fake_broker, worker_threads=THREADS, worker_timeout=50)
    worker.start()
    try:
        # and a tenant whose endpoint takes a second to answer: its first delivery makes it slow
        slow = receivers(1.0)
        slow_account = account_with_endpoint(database, slow.url)
        emitted(database, slow_account, 1)
        wait_until(lambda: statuses(database, slow_account) == ["succeeded"])
        wait_until(lambda: slots_redis.exists(SLOW_KEY_PREFIX + slow_account))  # marked after its outcome's commit

        # when a dozen more of its events come, then another tenant's, whose endpoint answers at once
        emitted(database, slow_account, 12)
        quick = receivers(0.0)
        quick_account = account_with_endpoint(database, quick.url)
        emitted(database, quick_account, 1)

        # then the other tenant's delivery goes out while the slow tenant's still wait their turn
        wait_until(lambda: statuses(database, quick_account) == ["succeeded"])
        assert "pending" in statuses(database, slow_account)
        # and the slow endpoint was never answering more than the account's slots at once (8 without them)
        wait_until(lambda: statuses(database, slow_account).count("succeeded") >= 1 + 2 * SLOTS)
        assert slow.most == SLOTS
    finally:
        worker.stop()
        resources.use(None)
