"""The send pipeline's end-to-end checks with the jobs queued on RabbitMQ (CREDITQ_BROKER=rabbitmq): web, worker,
Twilio simulator, a RabbitMQ node of the test session's, PostgreSQL, and Redis for the throttles and rate limits only.

The checks are the Redis pipeline module's own (tests/e2e/test_send_pipeline_e2e.py), on fewer messages: each
message sent once and charged once against the simulator's log, and `creditq ledger verify` clean.
"""

import time
from datetime import UTC, datetime, timedelta

import pytest
import redis
import requests

from tests.e2e.test_send_pipeline_e2e import (
    all_final,
    check_money,
    new_account,
    post_messages,
    wait_until,
    without_quiet_hours,
)
from tests.support.stack import ADMIN_KEY, Stack

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def stack(postgres_server, rabbitmq_server, tmp_path_factory):
    env = {
        "CREDITQ_HOLD_TTL_SECONDS": "15",
        "TWILIO_TIMEOUT_SECONDS": "5",
        "CREDITQ_SWEEP_STALE_SECONDS": "10",
        "CREDITQ_SENDER_RATES": "long_code=1000,toll_free=1000,short_code=1000",
        "TWILIO_SIM_CALLBACK_DELAY_MS": "100",
    }
    with Stack(postgres_server, tmp_path_factory.mktemp("stack"), database_name="e2e_rabbitmq", env=env,
               amqp_url=rabbitmq_server.url) as running:
        yield running


def test_messages_with_messy_callbacks_are_sent_once_and_charged_once_through_rabbitmq(stack, database, broker, sim):
    # Given four accounts and a Twilio that duplicates and reorders callbacks and fails some messages
    sim(duplicate_callback_rate=0.2, out_of_order_rate=0.2,
        outcomes={"delivered": 0.9, "undelivered": 0.05, "failed": 0.05})
    accounts = [new_account(stack, n, "1000") for n in range(4)]
    # When 200 messages are posted
    ids = post_messages(stack, [(headers, sender, f"rabbit {i} to {account_id}")
                                for i in range(50) for account_id, headers, sender in accounts])
    # Then every one ends final and every account paid exactly Twilio's segments, once
    messages = wait_until(database, stack, broker, ids, all_final)
    check_money(database, stack, messages, {account_id: 1_000_000 for account_id, _, _ in accounts})
    # And the jobs went through RabbitMQ: Redis holds no dramatiq queue
    assert redis.Redis.from_url(stack.redis.url).keys("dramatiq:*") == []
    # And the web's metrics read the deployment's gauges (the four accounts among them) and the Redis beside
    scraped = requests.get(f"{stack.url}/metrics", headers={"Authorization": f"Bearer {ADMIN_KEY}"}, timeout=30)
    assert scraped.status_code == 200, scraped.text
    gauges = dict(line.rsplit(" ", 1) for line in scraped.text.splitlines() if line.startswith("creditq_"))
    assert float(gauges["creditq_accounts"]) >= 4 and float(gauges["creditq_redis_up"]) == 1


def test_a_worker_killed_mid_run_loses_resends_and_double_charges_nothing_on_rabbitmq(stack, database, broker, sim):
    accounts = [new_account(stack, 100 + n, "1000") for n in range(4)]
    ids = post_messages(stack, [(headers, sender, f"rabbit killed {i} to {account_id}")
                                for i in range(50) for account_id, headers, sender in accounts])
    # When a worker is killed -9 while messages are in flight (RabbitMQ requeues what it had not acked), then restarted
    wait_until(database, stack, broker, ids, lambda ms: sum(m.twilio_sid is not None for m in ms) >= 40)
    stack.kill_worker()
    stack.start_worker()
    # Then every message still ends final, none reached Twilio twice, none was charged twice
    messages = wait_until(database, stack, broker, ids, all_final, timeout=120)
    check_money(database, stack, messages, {account_id: 1_000_000 for account_id, _, _ in accounts})


def test_scheduled_messages_wait_in_rabbitmqs_delay_queue_and_go_out_without_a_sweep(stack, database, sim):
    # Given messages scheduled a few seconds ahead (their release jobs delayed on the broker), by an account with no
    # quiet hours: a scheduled text is held to 08:00 at the recipient's, and it may be night in San Francisco
    account_id, headers, sender = new_account(stack, 200, "100")
    without_quiet_hours(stack, account_id, headers)
    send_at = (datetime.now(UTC) + timedelta(seconds=3)).isoformat()
    session = requests.Session()
    ids = []
    for i in range(10):
        response = session.post(f"{stack.url}/v1/messages", headers=headers, timeout=30,
                                json={"to": "+14155550100", "from": sender, "body": f"rabbit later {i}",
                                      "send_at": send_at})
        assert response.status_code == 202 and response.json()["status"] == "scheduled", response.text
        ids.append(response.json()["id"])
    # When their time comes, with no sweep enqueued (no scheduler runs in the stack)
    messages = wait_until(database, stack, None, ids, all_final, sweep=False)
    # Then the delayed jobs released every one: each sent once and charged once
    check_money(database, stack, messages, {account_id: 100_000})


def ready_in_queue(broker, queue_name: str, expected: int, timeout: float = 15.0) -> int:
    """The queue's ready count once it reaches `expected` (or at the timeout): RabbitMQ may have pushed a job to the
    killed worker's consumer before it noticed the closed connection, and holds it unacked until then."""
    deadline = time.monotonic() + timeout
    while (ready := broker.get_queue_message_counts(queue_name)[0]) != expected and time.monotonic() < deadline:
        time.sleep(0.1)
    return ready


def test_the_scheduler_on_rabbitmq_sweeps_up_send_jobs_the_broker_lost(stack, database, broker, sim):
    # Given messages accepted while no worker runs, whose send jobs are then lost from RabbitMQ
    account_id, headers, sender = new_account(stack, 300, "100")
    stack.kill_worker()
    ids = post_messages(stack, [(headers, sender, f"rabbit lost {i}") for i in range(20)])
    assert ready_in_queue(broker, "send", 20) == 20
    broker.flush("send")
    # When the worker comes back and the scheduler runs (its jobs on RabbitMQ, its lease in Redis)
    stack.start_worker()
    stack.start_scheduler()
    try:
        messages = wait_until(database, stack, broker, ids, all_final, sweep=False)
        assert redis.Redis.from_url(stack.redis.url).get("creditq:scheduler:lease") is not None
    finally:
        stack.stop_scheduler()
    # Then the scheduler's sweep enqueued them again from the database: each sent once and charged once
    check_money(database, stack, messages, {account_id: 100_000})
