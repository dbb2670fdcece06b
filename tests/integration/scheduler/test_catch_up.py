"""Two schedulers over a real Redis, real workers: a month-end missed while down runs once when back."""

import functools
import threading
import time
from datetime import UTC, datetime, timedelta

import dramatiq
import pytest
import redis
from apscheduler.triggers.interval import IntervalTrigger
from sqlalchemy import func, select

from scheduler.jobs import ScheduledJob, install_jobs
from scheduler.lease import RedisLease
from scheduler.service import SchedulerService
from shared.billing.calendar import last_ended, period_of
from shared.billing.payments import SimulatedGateway
from shared.email import FileOutbox
from shared.models import Account, BillingRun, Entry
from tests.support.brokers import install_broker

pytestmark = pytest.mark.redis

TZ = "Pacific/Auckland"


@pytest.fixture
def running_workers(embedded_redis, sqlite_database, tmp_path):
    client = redis.Redis.from_url(embedded_redis.url)
    client.flushall()
    broker = install_broker(client)
    import workers  # noqa: F401  (declares the actors, now on this broker)
    from workers import resources
    from workers.payments import Billing, use_billing

    resources.use(resources.Resources(database=sqlite_database, gateway_for=None, throttle=None,
                                      hold_ttl_seconds=900, stale_after=timedelta(minutes=1)))
    use_billing(Billing(SimulatedGateway(), FileOutbox(tmp_path / "outbox"), "http://127.0.0.1"))
    worker = dramatiq.Worker(broker, worker_timeout=100, worker_threads=2)
    worker.start()
    yield client, broker
    worker.stop()
    resources.use(None)
    use_billing(None)


def _service(client, broker) -> SchedulerService:
    # the production billing tick, fired every second instead of every minute
    schedule = [ScheduledJob("billing_tick", IntervalTrigger(seconds=1, timezone=UTC), "billing_tick")]
    return SchedulerService(RedisLease(client, ttl_ms=600),
                            functools.partial(install_jobs, broker=broker, schedule=schedule))


def _closed(database) -> list[str]:
    with database.unit_of_work() as session:
        return list(session.scalars(select(BillingRun.period).where(BillingRun.step == "close")
                                    .order_by(BillingRun.period)))


def _wait_for(predicate, timeout=30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return False


def test_a_missed_month_end_is_caught_up_once_by_whichever_scheduler_is_active(running_workers, sqlite_database):
    client, broker = running_workers
    now = datetime.now(UTC)
    # given an account created three months ago whose month-ends all ran while no scheduler was up
    with sqlite_database.unit_of_work() as session:
        session.add(Account(id="acct_catchup", name="Acme", timezone=TZ, plan_monthly_credits=50_000,
                            plan_cycle="monthly", plan_rollover="none", overdraft_policy="prepaid", status="active",
                            balance=0, held=0, allocated=0, allocated_held=0, created_at=now - timedelta(days=80)))
    first_month, last_month = period_of(now - timedelta(days=80), TZ), last_ended(now, TZ)
    expected = [str(first_month.shift(i)) for i in range(last_month.index - first_month.index + 1)]

    # when two schedulers start and the active one dies after a while
    first, second = _service(client, broker), _service(client, broker)
    threads = [threading.Thread(target=s.run, daemon=True) for s in (first, second)]
    for thread in threads:
        thread.start()
    assert _wait_for(lambda: first.active.is_set() or second.active.is_set())
    assert _wait_for(lambda: _closed(sqlite_database) == expected)
    active, standby = (first, second) if first.active.is_set() else (second, first)
    with sqlite_database.unit_of_work() as session:
        entries_before = session.scalar(select(func.count()).select_from(Entry))
    active.stop()
    assert _wait_for(standby.active.is_set, timeout=10)
    time.sleep(2.5)  # the standby's ticks run too
    standby.stop()
    for thread in threads:
        thread.join(5)

    # then every missed month was closed exactly once, in order, and the standby's ticks changed nothing
    assert _closed(sqlite_database) == expected
    with sqlite_database.unit_of_work() as session:
        assert session.scalar(select(func.count()).select_from(Entry)) == entries_before
        assert session.get(Account, "acct_catchup").balance == 50_000  # only the current month's grant is left
