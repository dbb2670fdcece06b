"""Endpoints that answer slowly hold a few of the worker's threads, not all of them: an account's few, webhooks'
half in all; the other deliveries wait their turn without a thread, and another tenant's go out meanwhile."""

import threading
import time
import uuid
from datetime import UTC, datetime, timedelta

import dramatiq
import fakeredis
import pytest
import redis
from sqlalchemy import select

from shared.config import WebhookSettings
from shared.events import delivery, outbox
from shared.events.endpoints import create_endpoint
from shared.events.slots import WebhookSlots
from shared.messaging.sender_throttle import SenderThrottle
from shared.models import Account, WebhookDelivery, WebhookEndpoint, WebhookEvent
from tests.integration.messaging.test_send_pipeline import FAST
from tests.unit.events.test_delivery import LocalEndpoint

PER_ACCOUNT, THREADS = 2, 8


class SlowReceiver(LocalEndpoint):
    """An endpoint that answers each POST after `seconds`, keeping how many it was answering at once at most, and
    with `everyone` (shared by several receivers) how many they all were."""

    def __init__(self, seconds: float, everyone: "SlowReceiver | None" = None):
        self.seconds, self.under_way, self.most = seconds, 0, 0
        self.lock = threading.Lock()
        self.counters = [self] if everyone is None else [self, everyone]
        super().__init__()

    def answer(self, request, body: str) -> None:
        for counter in self.counters:
            with counter.lock:
                counter.under_way += 1
                counter.most = max(counter.most, counter.under_way)
        time.sleep(self.seconds)
        for counter in self.counters:
            with counter.lock:
                counter.under_way -= 1
        request.send_response(200)
        request.end_headers()


@pytest.fixture
def receivers():
    started = []
    yield lambda seconds, everyone=None: started.append(SlowReceiver(seconds, everyone)) or started[-1]
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
    """Poll `condition`, enqueueing the webhook sweep every second as the scheduler would (deferred deliveries are
    left to it)."""
    from workers.webhooks import sweep_webhooks

    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "gave up waiting"
        sweep_webhooks.send()
        time.sleep(1)


@pytest.mark.redis
def test_endpoints_answering_slowly_hold_a_few_threads_and_another_tenants_deliveries_go_out(
        database, fake_broker, receivers, embedded_redis):
    import workers  # noqa: F401  (declares the actors on the broker)
    from workers import resources

    # given a worker of 8 threads, webhooks allowed half of them, an account 2 (the account slots on the real Redis:
    # its scripts run atomically, fakeredis's not between threads)
    resources.use(resources.Resources(
        database=database, gateway_for=None, throttle=SenderThrottle(fakeredis.FakeRedis(), FAST),
        hold_ttl_seconds=900, stale_after=timedelta(seconds=1), development=True,
        webhooks=WebhookSettings(timeout_seconds=5),
        webhook_slots=WebhookSlots(redis.Redis.from_url(embedded_redis.url), per_account=PER_ACCOUNT,
                                   per_process=THREADS // 2)))
    worker = dramatiq.Worker(fake_broker, worker_threads=THREADS, worker_timeout=50)
    worker.start()
    try:
        # and three tenants whose endpoints take a second to answer, sent a dozen events each
        everyone = receivers(0)  # counts the three slow endpoints' requests together
        slow = [receivers(1.0, everyone) for _ in range(3)]
        slow_accounts = [account_with_endpoint(database, receiver.url) for receiver in slow]
        for account_id in slow_accounts:
            emitted(database, account_id, 12)

        # when another tenant, whose endpoint answers at once, is sent an event
        quick = receivers(0.0)
        quick_account = account_with_endpoint(database, quick.url)
        emitted(database, quick_account, 1)

        # then its delivery goes out while slow tenants' still wait their turn (not behind all of theirs: once their
        # first attempts end they hold one of the worker's four webhook slots each, and the fourth is left free)
        wait_until(lambda: statuses(database, quick_account) == ["succeeded"])
        assert any("pending" in statuses(database, account_id) for account_id in slow_accounts)
        # and, once each slow endpoint answered a few, no slow endpoint was answering more than its account's slots at
        # once, nor all of them more than the worker's half (8 and 8 without the slots), all three at once at least
        wait_until(lambda: all(statuses(database, account_id).count("succeeded") >= 2 * PER_ACCOUNT
                               for account_id in slow_accounts))
        assert all(1 <= receiver.most <= PER_ACCOUNT for receiver in slow)
        assert len(slow) <= everyone.most <= THREADS // 2
    finally:
        worker.stop()
        resources.use(None)


def test_the_sweeper_enqueues_a_waiting_delivery_as_having_spent_its_quick_tries(database, enqueued):
    from workers import resources
    from workers.webhooks import sweep_webhooks

    # given a delivery left waiting for the sweeper (its quick tries found no slot), due for a while
    resources.use(resources.Resources(database=database, gateway_for=None,
                                      throttle=SenderThrottle(fakeredis.FakeRedis(), FAST), hold_ttl_seconds=900,
                                      stale_after=timedelta(seconds=60)))
    try:
        account_id = account_with_endpoint(database, "http://127.0.0.1:9/hooks")
        emitted(database, account_id, 1)
        with database.unit_of_work() as session:
            [event_id] = session.scalars(select(WebhookEvent.id).where(WebhookEvent.account_id == account_id))
            [delivery_id] = delivery.dispatch(session, event_id, settings=WebhookSettings(), now=datetime.now(UTC))
            session.get(WebhookDelivery, delivery_id).next_attempt_at = datetime.now(UTC) - timedelta(minutes=5)

        # when the sweeper runs
        sweep_webhooks.fn()

        # then its job goes as one whose quick tries are spent: finding no slot, it waits for the next sweep
        assert [m.args for m in enqueued if m.actor_name == "deliver_webhook"] == [(delivery_id, delivery.QUICK_TRIES)]
    finally:
        resources.use(None)
