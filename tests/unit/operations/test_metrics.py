"""The deployment's gauges, read from the database and Redis when Prometheus scrapes."""

import threading
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta

import dramatiq
import fakeredis
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from shared.models import Account, BillingRun, Hold, Message, WebhookDelivery, WebhookEndpoint, WebhookEvent
from shared.operations.metrics import OperationsCollector
from tests.support.brokers import install_broker

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)


def scrape(collector) -> dict[tuple[str, tuple], float]:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    text = generate_latest(registry).decode()
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def message(id_, status, *, hold_id=None, error_code=None, updated=NOW) -> Message:
    return Message(id=id_, account_id="acct_1", to="+14155550100", from_="+14155550123", body="hi", status=status,
                   hold_id=hold_id, error_code=error_code, created_at=updated, updated_at=updated)


def hold(id_, status, amount) -> Hold:
    return Hold(id=id_, account_id="acct_1", amount=amount, status=status, idempotency_key=f"hold-{id_}",
                created_at=NOW, expires_at=NOW + timedelta(minutes=15))


def test_a_scrape_shows_the_backlogs_an_operator_watches(sqlite_database):
    # given an account with two pending holds (one of a delivered message not settled for 90 s), a settled one,
    # a parked message, a delivered one and an undelivered one (30007) in the last hour, one older failure,
    # a month-end closed for one of two accounts with a bill pending, and a webhook delivery waiting 10 minutes
    with sqlite_database.unit_of_work() as session:
        session.add_all([Account(id="acct_1", name="Grace"), Account(id="acct_2", name="Hope")])
        session.flush()
        session.add_all([hold(1, "pending", 1500), hold(2, "pending", 500), hold(3, "settled", 900)])
        session.flush()
        session.add_all([
            message("msg_lagging", "delivered", hold_id=1, updated=NOW - timedelta(seconds=90)),
            message("msg_parked", "parked"),
            message("msg_settled", "delivered", hold_id=3),
            message("msg_undelivered", "undelivered", error_code=30007),
            message("msg_old", "failed", error_code=21211, updated=NOW - timedelta(hours=3)),
            BillingRun(account_id="acct_1", period="2026-10", step="close", status="completed", created_at=NOW),
            BillingRun(account_id="acct_1", period="2026-10", step="bill", status="pending", created_at=NOW),
            BillingRun(account_id="acct_2", period="2026-09", step="close", status="completed", created_at=NOW),
            WebhookEndpoint(id="we_1", account_id="acct_1", url="https://example.com/hook", secret="s",
                            created_at=NOW, updated_at=NOW),
            WebhookEvent(id="evt_1", account_id="acct_1", type="message.delivered", key="k1", data={},
                         created_at=NOW, dispatched_at=NOW),
            WebhookEvent(id="evt_2", account_id="acct_1", type="message.delivered", key="k2", data={},
                         created_at=NOW),
        ])
        session.flush()
        session.add(WebhookDelivery(id="wd_1", event_id="evt_1", endpoint_id="we_1", status="pending",
                                    retry_until=NOW + timedelta(days=3), created_at=NOW - timedelta(minutes=10),
                                    updated_at=NOW))
    # and three send jobs waiting, one of them delayed
    client = fakeredis.FakeRedis()
    broker = install_broker(client)
    for delay in (None, None, 60_000):
        broker.enqueue(dramatiq.Message(queue_name="send", actor_name="send_message", args=("m",), kwargs={},
                                        options={}), delay=delay)

    # when Prometheus scrapes
    samples = scrape(OperationsCollector(sqlite_database, client, now=lambda: NOW))

    # then each figure is the database's and Redis's
    assert samples[("creditq_queue_depth", (("queue", "send"),))] == 2
    assert samples[("creditq_queue_depth", (("queue", "send.DQ"),))] == 1
    assert samples[("creditq_holds_outstanding", ())] == 2
    assert samples[("creditq_holds_outstanding_millicredits", ())] == 2000
    assert samples[("creditq_settlement_lag_seconds", ())] == 90
    assert samples[("creditq_parked_messages", ())] == 1
    assert samples[("creditq_messages_final_recent", (("error_code", "30007"), ("status", "undelivered")))] == 1
    assert samples[("creditq_messages_final_recent", (("error_code", ""), ("status", "delivered")))] == 2
    assert ("creditq_messages_final_recent", (("error_code", "21211"), ("status", "failed"))) not in samples
    assert samples[("creditq_accounts", ())] == 2
    assert samples[("creditq_month_end_closed_accounts", (("period", "2026-10"),))] == 1
    assert samples[("creditq_month_end_bills_pending", ())] == 1
    assert samples[("creditq_webhook_events_undispatched", ())] == 1
    assert samples[("creditq_webhook_deliveries_pending", ())] == 1
    assert samples[("creditq_webhook_delivery_backlog_seconds", ())] == 600


def test_an_idle_deployment_reads_zero_lag_and_no_backlog(sqlite_database):
    samples = scrape(OperationsCollector(sqlite_database, fakeredis.FakeRedis(), now=lambda: NOW))

    assert samples[("creditq_settlement_lag_seconds", ())] == 0
    assert samples[("creditq_webhook_delivery_backlog_seconds", ())] == 0
    assert samples[("creditq_holds_outstanding", ())] == 0


def test_with_redis_away_a_scrape_still_reads_the_database_and_says_redis_is_down(sqlite_database):
    # Given a deployment with a parked message, and its Redis away
    server = fakeredis.FakeServer()
    server.connected = False
    with_a_parked_message(sqlite_database)

    # When Prometheus scrapes
    samples = scrape(OperationsCollector(sqlite_database, fakeredis.FakeRedis(server=server), now=lambda: NOW))

    # Then Redis reads as down, without queue gauges, and the database's gauges are all there
    assert samples[("creditq_redis_up", ())] == 0
    assert not any(name == "creditq_queue_depth" for name, _ in samples)
    assert samples[("creditq_parked_messages", ())] == 1


class SlowDatabase:
    """The database, whose first read waits until the test lets it go; it counts the reads."""

    def __init__(self, database):
        self.database = database
        self.reads = 0
        self.first_read_began = threading.Event()
        self.release = threading.Event()

    @contextmanager
    def read_only(self):
        self.reads += 1
        if self.reads == 1:
            self.first_read_began.set()
            self.release.wait(10)
        with self.database.read_only() as session:
            yield session


class ArrivalsCounted:
    """A lock that releases `arrived` as each caller comes to it, before it waits for it."""

    def __init__(self, lock, arrived: threading.Semaphore):
        self.lock, self.arrived = lock, arrived

    def __enter__(self):
        self.arrived.release()
        return self.lock.__enter__()

    def __exit__(self, *exc):
        return self.lock.__exit__(*exc)


def with_a_parked_message(database) -> None:
    with database.unit_of_work() as session:
        session.add(Account(id="acct_1", name="Realty"))
        session.flush()
        session.add(message("msg_1", "parked"))


def stuck_scrape(database: SlowDatabase) -> tuple[OperationsCollector, threading.Thread]:
    """A collector on `database`, and a scrape of it that has begun its (slow) read."""
    collector = OperationsCollector(database, fakeredis.FakeRedis(), now=lambda: NOW)
    first = threading.Thread(target=scrape, args=(collector,))
    first.start()
    assert database.first_read_began.wait(10)
    return collector, first


def scrapes_during_the_read(collector: OperationsCollector, database: SlowDatabase, first: threading.Thread,
                            count: int, scrape_once) -> None:
    """`count` threads calling `scrape_once`, each come to wait for the stuck read; then that read goes on, and all
    end."""
    asked = threading.Semaphore(0)
    collector._reading = ArrivalsCounted(collector._reading, asked)
    late = [threading.Thread(target=scrape_once) for _ in range(count)]
    for thread in late:
        thread.start()
    for _ in late:
        assert asked.acquire(timeout=10)
    database.release.set()
    for thread in (first, *late):
        thread.join(10)


def test_scrapes_that_arrive_during_a_slow_read_share_one_read_after_it_instead_of_queueing_one_each(
        sqlite_database):
    # given a deployment with a parked message, and a scrape stuck on a slow database read
    with_a_parked_message(sqlite_database)
    database = SlowDatabase(sqlite_database)
    collector, first = stuck_scrape(database)

    # when three more scrapes ask while it reads (each has come to wait for the reading one), and then it finishes
    answers = []
    scrapes_during_the_read(collector, database, first, 3, lambda: answers.append(scrape(collector)))

    # then the database was read twice: the slow read, and one more that all three late scrapes share
    assert database.reads == 2
    assert len(answers) == 3
    assert all(answer[("creditq_parked_messages", ())] == 1 for answer in answers)


def test_a_scrape_that_waited_for_a_read_that_failed_reads_for_itself(sqlite_database):
    # given a deployment with a parked message, a scrape stuck on a slow database read, and a database whose next
    # read will fail
    with_a_parked_message(sqlite_database)
    database = SlowDatabase(sqlite_database)
    slow_read = database.read_only

    @contextmanager
    def second_fails():
        with slow_read() as session:
            if database.reads == 2:
                raise RuntimeError("the database went away")
            yield session

    database.read_only = second_fails
    collector, first = stuck_scrape(database)

    # when two more scrapes ask while it reads, and the read one of them makes after it fails
    outcomes = []

    def late_scrape():
        try:
            outcomes.append(scrape(collector))
        except RuntimeError as error:
            outcomes.append(error)

    scrapes_during_the_read(collector, database, first, 2, late_scrape)

    # then that scrape meets the failure, and the other, not handed a failed read, reads the database itself
    assert database.reads == 3
    [failure] = [outcome for outcome in outcomes if isinstance(outcome, RuntimeError)]
    [answer] = [outcome for outcome in outcomes if not isinstance(outcome, RuntimeError)]
    assert answer[("creditq_parked_messages", ())] == 1
