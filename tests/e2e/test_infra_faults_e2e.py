"""The real processes through the infrastructure's faults: PostgreSQL restarted mid-run, a Twilio that fails and
stalls for a while, the active scheduler killed during month-end, and processes whose clocks are minutes apart.

Each test ends as an operator would check: `creditq ledger verify` clean, and every message the API accepted
sent once (the Twilio simulator's own log) and charged once (the ledger). One stack serves the module, on a
PostgreSQL of its own, since one test restarts it.
"""

import re
import threading
import time
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime

import pytest
import requests
from sqlalchemy import func, select

from shared.billing.calendar import last_ended
from shared.models import Account, BillingRun, Message
from tests.e2e.test_send_pipeline_e2e import (
    OPERATOR,
    all_final,
    check_money,
    ledger_verify,
    new_account,
    post_messages,
    simulated,
    wait_until,
)
from tests.support.postgres import TemporaryPostgres
from tests.support.stack import Stack

pytestmark = pytest.mark.e2e

TWILIO_TIMEOUT_SECONDS = 1  # the workers' wait for Twilio's answer, well under the simulator's hang
HANG_SECONDS = 3


@pytest.fixture(scope="module")
def postgres():
    """This module's own PostgreSQL: restarting it leaves the session's other stacks alone."""
    with TemporaryPostgres() as server:
        yield server


@pytest.fixture(scope="module")
def stack(postgres, tmp_path_factory):
    env = {
        "CREDITQ_HOLD_TTL_SECONDS": "10",  # unknown outcomes reconciled within the test's patience
        "CREDITQ_SWEEP_STALE_SECONDS": "10",
        "CREDITQ_SENDER_RATES": "long_code=1000,toll_free=1000,short_code=1000",
        "TWILIO_SIM_CALLBACK_DELAY_MS": "100",
        "TWILIO_TIMEOUT_SECONDS": str(TWILIO_TIMEOUT_SECONDS),
        "CREDITQ_SCHEDULER_LEASE_SECONDS": "2",  # a standby takes over within 2 s of the active one's death
    }
    with Stack(postgres, tmp_path_factory.mktemp("stack"), database_name="e2e_infra_faults", env=env) as running:
        yield running


def messages_of(database, account_ids: list[str]) -> dict[str, Message]:
    with database.unit_of_work() as session:
        return {m.id: m for m in session.scalars(select(Message).where(Message.account_id.in_(account_ids)))}


def test_postgresql_restarted_mid_run_loses_nothing_and_answers_503_meanwhile(stack, postgres, database, broker, sim):
    # given three accounts sending while PostgreSQL is restarted under them
    accounts = [new_account(stack, 400 + n, "1000") for n in range(3)]
    answers: list[requests.Response] = []
    restarted = threading.Event()

    def keep_posting():
        """A client posting one message after another until 30 have been accepted since the restart."""
        session, n, accepted_after = requests.Session(), 0, 0
        while accepted_after < 30:
            _, headers, sender = accounts[n % 3]
            answer = session.post(f"{stack.url}/v1/messages", headers=headers, timeout=30,
                                  json={"to": "+14155550100", "from": sender, "body": f"restart {n}"})
            answers.append(answer)
            accepted_after += restarted.is_set() and answer.status_code == 202
            n += 1
            time.sleep(0.02)

    poster = threading.Thread(target=keep_posting)
    poster.start()
    try:
        wait_until(database, stack, broker, [], lambda _: sum(a.status_code == 202 for a in answers) >= 30)
        # when the server stops (every session ended, in-flight transactions rolled back) and starts again
        postgres.stop_server()
        time.sleep(2)  # the outage: requests and jobs meet a database that is not there
        postgres.start_server()
        database.engine.dispose()  # the test's own connections died with the server too
        restarted.set()
    finally:
        poster.join(120)
    assert not poster.is_alive()

    # then while it was away intake answered 503 with Retry-After as problem+json, and never anything else
    refused = [a for a in answers if a.status_code != 202]
    assert refused and {a.status_code for a in refused} == {503}
    assert all(a.headers["Content-Type"].startswith("application/problem+json") and int(a.headers["Retry-After"]) > 0
               for a in refused)
    # and every message accepted (202) is in the database, sent once, settled, and charged once
    accepted = {a.json()["id"] for a in answers if a.status_code == 202}
    account_ids = [account_id for account_id, _, _ in accounts]
    wait_until(database, stack, broker, list(accepted), all_final, timeout=120)
    messages = messages_of(database, account_ids)
    assert accepted <= set(messages) and all_final(messages.values())
    check_money(database, stack, messages, {account_id: 1_000_000 for account_id in account_ids})
    # and the web's other requests, on a pool whose connections died with the server too, are served again after one
    # 503 at most: a pool that meets a dead connection replaces all it held
    created = [requests.post(f"{stack.url}/v1/accounts", headers=OPERATOR, timeout=30,
                             json={"name": f"After the restart {n}", "timezone": "UTC"}) for n in range(2)]
    assert created[1].status_code == 201 and created[0].status_code in (201, 503), [c.text for c in created]


def test_a_twilio_failing_and_stalling_for_a_while_sends_everything_once_afterwards(stack, database, broker, sim):
    # given a Twilio that, for a while, fails requests, stalls them past the workers' timeout, and creates some
    # messages without answering
    sim(rate_5xx=0.2, rate_timeout=0.2, rate_lost_answer=0.2, hang_s=HANG_SECONDS)
    account_id, headers, sender = new_account(stack, 500, "1000")

    # when 60 messages are posted into that window, and Twilio recovers once each fault has hit some of them
    ids = post_messages(stack, [(headers, sender, f"outage {i}") for i in range(60)])

    def faults() -> dict:
        return requests.get(f"{stack.simulator_url}/_sim/faults", timeout=10).json()

    wait_until(database, stack, broker, ids, lambda _: all(faults().get(kind, 0) >= 3
                                                           for kind in ("5xx", "timeout", "lost_answer")))
    sim(rate_5xx=0, rate_timeout=0, rate_lost_answer=0)

    # then every message is delivered: a create whose answer was lost was found, not sent again; one that
    # stalled without a create was sent afresh; and each was charged once
    messages = wait_until(database, stack, broker, ids, all_final, timeout=120)
    assert {m.status for m in messages.values()} == {"delivered"}
    assert sorted(m["body"] for m in simulated(stack)["messages"]) == sorted(f"outage {i}" for i in range(60))
    check_money(database, stack, messages, {account_id: 1_000_000})


MONTH_END_ENQUEUED = "billing tick: month-end for"  # the worker's line once a tick has enqueued the batches


def scheduler_active(metrics_url: str) -> bool:
    return bool(re.search(r"^creditq_scheduler_active 1\.0$", requests.get(metrics_url, timeout=10).text, re.M))


def add_accounts_due_for_month_end(database, prefix: str, count: int) -> list[str]:
    """Plan accounts created 40 days ago, never closed: the month that ended is due for each."""
    created = datetime.now(UTC) - timedelta(days=40)
    ids = [f"acct_{prefix}_{n:05d}" for n in range(count)]
    with database.unit_of_work() as session:
        session.add_all(Account(id=account_id, name=account_id, timezone="UTC", plan_monthly_credits=50_000,
                                plan_cycle="monthly", plan_rollover="none", overdraft_policy="prepaid",
                                status="active", balance=0, held=0, allocated=0, allocated_held=0, created_at=created)
                        for account_id in ids)
    return ids


def closed(database, account_ids: list[str], period: str) -> int:
    """How many of the accounts had `period` closed. Accounts made 40 days ago in a month's first days have two
    months due (the one they were made in, which ended meanwhile, and the last): both close, each once."""
    with database.unit_of_work() as session:
        return session.scalar(select(func.count()).select_from(BillingRun).where(
            BillingRun.step == "close", BillingRun.period == period, BillingRun.account_id.in_(account_ids)))


@pytest.fixture
def urls(stack):
    """The metrics URLs of the schedulers a test starts, by name; those still running are stopped after it, since
    one left holding the lease would keep the next test's schedulers from taking it."""
    started: dict[str, str] = {}
    yield started
    for name in set(started) & set(stack.processes):
        stack.stop_scheduler(name)


def test_the_scheduler_killed_during_month_end_is_replaced_by_its_standby_and_closes_each_account_once(
        stack, database, broker, sim, urls):
    # given an active scheduler and two on standby
    urls["scheduler-a"] = stack.start_scheduler("scheduler-a")
    wait_until(database, stack, broker, [], lambda _: scheduler_active(urls["scheduler-a"]), sweep=False)
    urls.update({name: stack.start_scheduler(name) for name in ("scheduler-b", "scheduler-c")})
    assert not scheduler_active(urls["scheduler-b"]) and not scheduler_active(urls["scheduler-c"])
    # and 6,000 accounts come due for month-end, which the active one's next tick (a minute away) would enqueue
    first_wave = add_accounts_due_for_month_end(database, "wave1", 6000)
    period = str(last_ended(datetime.now(UTC), "UTC"))
    ticks_before = stack.log("worker").count(MONTH_END_ENQUEUED)
    # (checked while it still holds the lease: 2 s after its death a standby takes over and closes them at once)
    assert closed(database, first_wave, period) == 0

    # when the active one is killed -9 before that tick
    stack.kill("scheduler-a")
    # and the standby that takes its lease is killed -9 too, once its first tick has enqueued the month-end (the
    # workers run its batches; on a quick machine they may be done before the kill)
    wait_until(database, stack, broker, [], lambda _: stack.log("worker").count(MONTH_END_ENQUEUED) > ticks_before,
               sweep=False)
    successor, last = (("scheduler-b", "scheduler-c") if scheduler_active(urls["scheduler-b"])
                       else ("scheduler-c", "scheduler-b"))
    stack.kill(successor)
    standby_url = urls[last]
    # and more accounts come due that only a running calendar will close
    second_wave = add_accounts_due_for_month_end(database, "wave2", 500)

    # then the last standby takes the lease and runs the calendar: every account is closed, each exactly once
    everyone = first_wave + second_wave
    wait_until(database, stack, broker, [], lambda _: scheduler_active(standby_url), sweep=False)
    wait_until(database, stack, broker, [], lambda _: closed(database, everyone, period) == len(everyone),
               sweep=False)
    stack.stop_scheduler(last)
    with database.unit_of_work() as session:
        runs = session.execute(select(BillingRun.account_id, BillingRun.period, func.count()).where(
            BillingRun.step == "close", BillingRun.account_id.in_(everyone))
            .group_by(BillingRun.account_id, BillingRun.period)).all()
        balances = set(session.scalars(select(Account.balance).where(Account.id.in_(everyone))))
    assert {account_id for account_id, closed_period, _ in runs if closed_period == period} == set(everyone)
    assert {count for _, _, count in runs} == {1}
    assert balances == {50_000}  # one grant of the new cycle each: a second close would have granted twice
    verify = ledger_verify(stack)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert simulated(stack)["duplicates"] == []


def test_processes_two_minutes_apart_share_leases_throttles_and_delays_on_redis_time(stack, database, broker, sim,
                                                                                    urls):
    # given workers, a web process and schedulers whose clocks are two minutes ahead of or behind Redis's, and a
    # sender number throttled to 2 segments a second
    stack.kill_worker()
    throttled = {"CREDITQ_SENDER_RATES": "long_code=2", "CREDITQ_HOLD_TTL_SECONDS": "900"}
    stack.start_worker("worker-ahead", clock="+2m", env=throttled)
    stack.start_worker("worker-behind", clock="-2m", env=throttled)
    web_behind = stack.start_web("web-behind", clock="-2m")
    urls.update({name: stack.start_scheduler(name, clock=clock)
                 for name, clock in (("scheduler-ahead", "+2m"), ("scheduler-behind", "-2m"))})
    # (each really keeps its clock: the Date it answers with is two minutes off the machine's)
    skews = {web_behind + "/healthz": -120, urls["scheduler-ahead"]: 120, urls["scheduler-behind"]: -120}
    for url, skew in skews.items():
        answered = parsedate_to_datetime(requests.get(url, timeout=30).headers["Date"])
        assert abs((answered - datetime.now(UTC)).total_seconds() - skew) < 30, (url, answered)
    account_id, headers, sender = new_account(stack, 600, "1000")

    # when 20 messages are posted through the web process behind
    posted_at = datetime.now(UTC)
    session, ids = requests.Session(), []
    for i in range(20):
        answer = session.post(f"{web_behind}/v1/messages", headers=headers, timeout=30,
                              json={"to": "+14155550100", "from": sender, "body": f"skew {i}"})
        assert answer.status_code == 202, answer.text
        ids.append(answer.json()["id"])

    # then one scheduler takes the lease and it alone holds it, lease period after lease period
    wait_until(database, stack, broker, [], lambda _: any(scheduler_active(url) for url in urls.values()),
               sweep=False)
    for _ in range(3):
        assert [scheduler_active(url) for url in urls.values()].count(True) == 1
        time.sleep(1)
    # and every message is sent once and charged once, none before its sender's slot: the k-th create at
    # Twilio comes at least k / 2 s after the first could have been booked
    messages = wait_until(database, stack, broker, ids, all_final, timeout=120)
    creates = sorted(datetime.fromisoformat(m["created_at"]) for m in simulated(stack)["messages"]
                     if m["from"] == sender)
    assert len(creates) == 20
    assert all(created >= posted_at + timedelta(seconds=k / 2 - 0.2) for k, created in enumerate(creates))
    check_money(database, stack, messages, {account_id: 1_000_000})
