"""The send pipeline over the real processes: web, worker, Twilio simulator, Redis, PostgreSQL.

One stack serves the module; each test uses its own accounts, and reads the database directly to
check the money. Sweeps are enqueued by the test (the scheduler would every 15 s).
"""

import os
import subprocess
import sys
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psutil
import pytest
import requests
from sqlalchemy import select

from shared.models import Account, Entry, Message
from tests.support.priority import can_step_forward_to
from tests.support.stack import ADMIN_KEY, ROOT, Stack

pytestmark = pytest.mark.e2e

FINAL = ("delivered", "undelivered", "failed")
OPERATOR = {"Authorization": f"Bearer {ADMIN_KEY}"}


@pytest.fixture(scope="module")
def stack(postgres_server, tmp_path_factory):
    env = {
        "CREDITQ_HOLD_TTL_SECONDS": "15",  # reconciliation within the test's patience
        "TWILIO_TIMEOUT_SECONDS": "5",  # a hold's TTL is at least twice Twilio's timeout
        "CREDITQ_SWEEP_STALE_SECONDS": "10",
        "CREDITQ_SENDER_RATES": "long_code=1000,toll_free=1000,short_code=1000",
        "TWILIO_SIM_CALLBACK_DELAY_MS": "100",
    }
    with Stack(postgres_server, tmp_path_factory.mktemp("stack"), database_name="e2e_pipeline", env=env) as running:
        yield running


def new_account(stack, n: int, credits: str, *, policy: str = "prepaid") -> tuple[str, dict, str]:
    """An account with one sender number and `credits` purchased: (id, its auth header, its number)."""
    created = requests.post(f"{stack.url}/v1/accounts", headers=OPERATOR, timeout=10,
                            json={"name": f"Account {n}", "timezone": "UTC",
                                  "overdraft": {"policy": policy, "limit": "0"}})
    assert created.status_code == 201, created.text
    account_id, key = created.json()["id"], created.json()["api_key"]
    sender = f"+1415555{n:04d}"
    number = requests.post(f"{stack.url}/v1/accounts/{account_id}/numbers", headers=OPERATOR, timeout=10,
                           json={"phone": sender, "type": "long_code"})
    assert number.status_code == 201, number.text
    grant(stack, account_id, credits)
    return account_id, {"Authorization": f"Bearer {key}"}, sender


def without_quiet_hours(stack, account_id: str, headers: dict) -> None:
    """Turn the account's quiet hours off: a scheduled text is otherwise held to 08:00 at the recipient's."""
    response = requests.patch(f"{stack.url}/v1/accounts/{account_id}", headers=headers, timeout=10,
                              json={"quiet_hours": {"start": "00:00", "end": "00:00"}})
    assert response.status_code == 200, response.text


def grant(stack, account_id: str, credits: str) -> None:
    response = requests.post(f"{stack.url}/v1/accounts/{account_id}/grants", headers=OPERATOR, timeout=10,
                             json={"credits": credits, "kind": "purchase"})
    assert response.status_code == 201, response.text


def post_messages(stack, sends: list[tuple[dict, str, str]]) -> list[str]:
    """POST every (headers, from, body) concurrently; each body is unique so the simulator spots resends."""
    session = requests.Session()

    def post(send):
        headers, sender, body = send
        for _ in range(5):  # as a client should: a 503 changed nothing and names when to come back
            response = session.post(f"{stack.url}/v1/messages", headers=headers, timeout=30,
                                    json={"to": "+14155550100", "from": sender, "body": body})
            if response.status_code != 503:
                break
            time.sleep(int(response.headers["Retry-After"]))
        assert response.status_code == 202, response.text
        return response.json()["id"]

    with ThreadPoolExecutor(16) as pool:
        return list(pool.map(post, sends))


def wait_until(database, stack, broker, ids: list[str], done, *, timeout: float = 90.0,
               sweep: bool = True) -> dict[str, Message]:
    """Poll until done(messages) holds, enqueueing a sweep every few seconds as the scheduler would (unless
    `sweep` is False: then only the processes' own jobs, or a scheduler the test runs, move them)."""
    deadline, next_sweep = time.monotonic() + timeout, 0.0
    while True:
        with database.unit_of_work() as session:
            messages = {m.id: m for m in session.scalars(select(Message).where(Message.id.in_(ids)))}
        if done(messages.values()):
            return messages
        if time.monotonic() > deadline:
            counts = Counter(m.status for m in messages.values())
            pytest.fail(f"messages not done after {timeout:.0f}s: {dict(counts)}\n{stack.log('worker')[-3000:]}")
        if sweep and time.monotonic() > next_sweep:
            stack.enqueue(broker, "sweep")
            next_sweep = time.monotonic() + 3
        time.sleep(0.3)


def all_final(messages) -> bool:
    return all(m.status in FINAL and m.credits_charged is not None for m in messages)


def simulated(stack) -> dict:
    return requests.get(f"{stack.simulator_url}/_sim/messages", timeout=30).json()


def ledger_verify(stack) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "creditq", "ledger", "verify"], env=stack.env, cwd=ROOT,
                          capture_output=True, text=True)


def check_money(database, stack, messages: dict[str, Message], starting_balance: dict[str, int]) -> None:
    """Each account paid exactly its messages' actual segments x 1 credit; nothing resent or charged twice."""
    by_body = {m["body"]: m for m in simulated(stack)["messages"]}
    assert simulated(stack)["duplicates"] == []
    expected: Counter = Counter()
    for message in messages.values():
        twilio = by_body.get(message.body)
        charged = twilio is not None and twilio["status"] in ("sent", "delivered", "undelivered")
        expected[message.account_id] += twilio["num_segments"] * 1000 if charged else 0
    with database.unit_of_work() as session:
        usage_per_message = Counter(session.scalars(
            select(Entry.reference).where(Entry.kind == "usage", Entry.reference.in_(list(messages)))))
        assert max(usage_per_message.values(), default=1) == 1
        for account_id, before in starting_balance.items():
            account = session.get(Account, account_id)
            charged = sum(m.credits_charged for m in messages.values() if m.account_id == account_id)
            assert (before - account.balance, account.held) == (charged, 0)
            assert charged == expected[account_id]
    verify = ledger_verify(stack)
    assert verify.returncode == 0, verify.stdout + verify.stderr


def test_a_thousand_messages_across_ten_accounts_with_messy_callbacks(stack, database, broker, sim):
    # Given ten accounts and a Twilio that duplicates and reorders callbacks and fails some messages
    sim(duplicate_callback_rate=0.2, out_of_order_rate=0.2,
        outcomes={"delivered": 0.9, "undelivered": 0.05, "failed": 0.05})
    accounts = [new_account(stack, n, "5000") for n in range(10)]
    # When 1,000 messages are posted
    ids = post_messages(stack, [(headers, sender, f"thousand {i} to {account_id}")
                                for i in range(100) for account_id, headers, sender in accounts])
    # Then every one ends final and every account paid exactly Twilio's segments, once
    messages = wait_until(database, stack, broker, ids, all_final)
    assert len(messages) == 1000
    check_money(database, stack, messages, {account_id: 5_000_000 for account_id, _, _ in accounts})


def test_forged_callbacks_are_refused(stack, database):
    forged = requests.post(f"{stack.url}/webhooks/twilio/status", timeout=10,
                           data={"MessageSid": "SM" + "0" * 32, "MessageStatus": "delivered"},
                           headers={"X-Twilio-Signature": "bm90IGEgc2lnbmF0dXJl"})
    assert forged.status_code == 403


def autogroup_nice(pid: int) -> str | None:
    """The nice of the process's scheduler autogroup ("/autogroup-123 nice 0"); None where the kernel has none."""
    group = Path(f"/proc/{pid}/autogroup")
    return group.read_text().split()[-1] if group.exists() else None


def thread_nices(process: psutil.Process) -> set[int]:
    """The nice of every thread of the process: Linux keeps one for each, and a thread's id reads as a process's."""
    return {psutil.Process(thread.id).nice() for thread in process.threads()}


def test_workers_step_back_from_the_cpu_unless_told_not_to_and_the_web_steps_forward(stack):
    # Given the stack's worker and web as they started (CREDITQ_WORKER_NICE unset: 19; CREDITQ_WEB_NICE unset: -20),
    # each in a session of its own
    # When another worker starts with CREDITQ_WORKER_NICE=0
    stack.start_worker("not-stepping-back", env={"CREDITQ_WORKER_NICE": "0"})
    try:
        not_stepping_back = psutil.Process(stack.processes["not-stepping-back"].pid)
        deadline = time.monotonic() + 60
        while len(not_stepping_back.children()) < stack.worker_processes and time.monotonic() < deadline:
            time.sleep(0.2)
        assert len(not_stepping_back.children()) >= stack.worker_processes
        # Then the default worker and every process it forked run at nice 19, and so does its session's scheduler
        # autogroup (where the kernel has autogroups: between sessions only the groups' nice counts)
        worker = psutil.Process(stack.processes["worker"].pid)
        assert {process.nice() for process in [worker, *worker.children(recursive=True)]} == {19}
        assert autogroup_nice(worker.pid) in ("19", None)
        # And the worker told 0 and everything it forked run at 0
        assert {process.nice() for process in [not_stepping_back, *not_stepping_back.children(recursive=True)]} == {0}
        assert autogroup_nice(not_stepping_back.pid) in ("0", None)
        # And the web, every thread of it (its event loop, its database threads), runs at -20 where it may, and its
        # autogroup too; without the right to (CAP_SYS_NICE, RLIMIT_NICE) it keeps the nice it started with, ours
        allowed = can_step_forward_to(-20)
        web = psutil.Process(stack.processes["web"].pid)
        assert thread_nices(web) == {-20 if allowed else os.getpriority(os.PRIO_PROCESS, 0)}
        assert autogroup_nice(web.pid) in ("-20" if allowed else "0", None)
    finally:
        stack.kill("not-stepping-back")


def test_a_worker_killed_mid_run_loses_resends_and_double_charges_nothing(stack, database, broker, sim):
    accounts = [new_account(stack, 100 + n, "5000") for n in range(10)]
    ids = post_messages(stack, [(headers, sender, f"killed {i} to {account_id}")
                                for i in range(100) for account_id, headers, sender in accounts])
    # When a worker is killed -9 while messages are in flight, then started again
    wait_until(database, stack, broker, ids, lambda ms: sum(m.twilio_sid is not None for m in ms) >= 200)
    stack.kill_worker()
    stack.start_worker()
    # Then every message still ends final, none reached Twilio twice, none was charged twice
    messages = wait_until(database, stack, broker, ids, all_final, timeout=120)
    check_money(database, stack, messages, {account_id: 5_000_000 for account_id, _, _ in accounts})


def test_a_storm_of_429s_delays_but_loses_nothing(stack, database, broker, sim):
    sim(rate_429=0.5, retry_after_s=0)
    account_id, headers, sender = new_account(stack, 200, "1000")
    ids = post_messages(stack, [(headers, sender, f"storm {i}") for i in range(100)])
    messages = wait_until(database, stack, broker, ids, all_final)
    check_money(database, stack, messages, {account_id: 1_000_000})


def test_a_prepaid_account_running_dry_is_locked_parked_and_resumed_by_a_purchase(stack, database, broker, sim):
    # Given 10 credits and 30 one-segment messages that Twilio sends as two segments each
    sim(num_segments_override=2)
    account_id, headers, sender = new_account(stack, 300, "10")
    without_quiet_hours(stack, account_id, headers)  # it may be night in San Francisco
    send_at = (datetime.now(UTC) + timedelta(seconds=2)).isoformat()  # queued together, before any hold
    session = requests.Session()
    ids = []
    for i in range(30):
        response = session.post(f"{stack.url}/v1/messages", headers=headers, timeout=30,
                                json={"to": "+14155550100", "from": sender, "body": f"dry {i}", "send_at": send_at})
        assert response.status_code == 202 and response.json()["status"] == "scheduled", response.text
        ids.append(response.json()["id"])

    def settled_or_parked(messages):
        return all((m.status in FINAL and m.credits_charged is not None) or m.status == "parked" for m in messages)

    messages = wait_until(database, stack, broker, ids, settled_or_parked)
    with database.unit_of_work() as session:
        account = session.get(Account, account_id)
        # Then the in-flight messages were all charged in full, which took the account below zero, locked
        assert account.status == "locked" and -10_000 <= account.balance < 0
        sent = [m for m in messages.values() if m.status in FINAL]
        assert account.balance == 10_000 - sum(m.credits_charged for m in sent)
    parked = [m.id for m in messages.values() if m.status == "parked"]
    refused = requests.post(f"{stack.url}/v1/messages", headers=headers, timeout=10,
                            json={"to": "+14155550100", "from": sender, "body": "while locked"})
    assert refused.status_code == 423
    # When credits are bought, the account unlocks and the parked messages go out
    grant(stack, account_id, "100")
    messages = wait_until(database, stack, broker, ids, all_final)
    assert all(messages[m].credits_charged == 2000 for m in parked)
    assert simulated(stack)["duplicates"] == []
    verify = ledger_verify(stack)
    assert verify.returncode == 0, verify.stdout + verify.stderr
