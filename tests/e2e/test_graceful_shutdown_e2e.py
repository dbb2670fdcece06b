"""SIGTERM drains: the web stops listening and answers every request it took; a worker finishes the jobs it is
running and puts back the ones it had only fetched. A rolling restart loses nothing and sends nothing twice."""

import json
import os
import signal
import socket
import time
from concurrent.futures import ThreadPoolExecutor

import psycopg
import pytest
import requests
from sqlalchemy import select

from shared.db import Database
from shared.models import Message
from tests.e2e.test_send_pipeline_e2e import ledger_verify, new_account, simulated
from tests.support.stack import Stack

pytestmark = pytest.mark.e2e

FAST_SENDERS = {"CREDITQ_SENDER_RATES": "long_code=1000,toll_free=1000,short_code=1000",
                "CREDITQ_SWEEP_STALE_SECONDS": "3600"}  # nothing here is re-driven by the sweeper


def wait_for(condition, what: str, timeout: float = 60.0):
    deadline = time.monotonic() + timeout
    while not (result := condition()):
        assert time.monotonic() < deadline, f"not {what} within {timeout:.0f}s"
        time.sleep(0.1)
    return result


def stored_messages(libpq: str, account_id: str) -> dict[str, str]:
    """The account's messages in the database, id by body."""
    with psycopg.connect(libpq) as check:
        return dict(check.execute("SELECT body, id FROM messages WHERE account_id = %s", (account_id,)).fetchall())


def queued_sends(client) -> set[str]:
    """Messages whose send jobs wait in Redis: on the send queue, or on its delay queue (a throttled send booked
    a slot a few milliseconds ahead, or a retry's backoff)."""
    message_ids = set()
    for queue in ("dramatiq:send", "dramatiq:send.DQ"):
        if job_ids := client.lrange(queue, 0, -1):
            message_ids.update(json.loads(job)["args"][0] for job in client.hmget(f"{queue}.msgs", job_ids))
    return message_ids


def refuses_connections(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) != 0


def test_a_web_process_told_to_stop_answers_every_request_it_took(postgres_server, tmp_path):
    with Stack(postgres_server, tmp_path, database_name="e2e_web_drain", worker_processes=1,
               env=FAST_SENDERS) as stack:
        account_id, headers, sender = new_account(stack, 1, "100")
        libpq = stack.database_url.replace("postgresql+psycopg://", "postgresql://")
        with psycopg.connect(libpq) as lock, psycopg.connect(libpq, autocommit=True) as watcher:
            # given the messages table locked against writes, so the web's accept batches wait for it with their
            # requests in flight
            lock.execute("LOCK TABLE messages IN SHARE MODE")

            def post(n: int):
                try:
                    response = requests.post(f"{stack.url}/v1/messages", headers=headers, timeout=60,
                                             json={"to": "+14155550100", "from": sender, "body": f"drain {n}"})
                    return n, response.status_code, response.json().get("id")
                except requests.ConnectionError:
                    return n, None, None

            with ThreadPoolExecutor(20) as pool:
                posted = [pool.submit(post, n) for n in range(20)]
                wait_for(lambda: watcher.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND datname = %s",
                    (stack.database_name,)).fetchone()[0] > 0, "an accept batch waiting on the messages table")

                # when the web is told to stop
                web = stack.processes["web"]
                web.send_signal(signal.SIGTERM)

                # then it stops listening at once, while the requests it took still wait
                wait_for(lambda: refuses_connections(stack.web_port), "refusing new connections")
                assert web.poll() is None
                lock.rollback()  # the table is free again: the batches commit
                results = [future.result() for future in posted]

        # and every request it took was answered 202 with a message that exists; none was stored unanswered
        assert web.wait(timeout=60) == 0
        answered = {n: message_id for n, status, message_id in results if status == 202}
        assert len(answered) >= 1 and all(status in (202, None) for _, status, _ in results)
        assert stored_messages(libpq, account_id) == {f"drain {n}": message_id for n, message_id in answered.items()}
        assert "Traceback" not in stack.log("web")


def _signal_the_parent(process) -> None:
    process.send_signal(signal.SIGTERM)


def _signal_every_process_twice(process) -> None:
    """As `creditq dev` stops its children, and systemd its unit (KillMode=control-group, its default): each worker
    process is told by this signal and by its parent passing its own on; then all once more while they drain."""
    os.killpg(process.pid, signal.SIGTERM)
    time.sleep(0.3)
    os.killpg(process.pid, signal.SIGTERM)


@pytest.mark.parametrize("tell", [_signal_the_parent, _signal_every_process_twice])
def test_a_worker_told_to_stop_finishes_its_running_sends_and_puts_back_the_rest(postgres_server, tmp_path, tell):
    env = {**FAST_SENDERS, "TWILIO_SIM_LATENCY_MS": "1500"}  # each create takes 1.5 s at Twilio
    with Stack(postgres_server, tmp_path, database_name="e2e_worker_drain", worker_processes=1, worker_threads=2,
               env=env) as stack:
        database = Database(stack.database_url, pool_size=2)
        broker = stack.broker()
        try:
            account_id, headers, sender = new_account(stack, 1, "100")
            ids = [requests.post(f"{stack.url}/v1/messages", headers=headers, timeout=30,
                                 json={"to": "+14155550100", "from": sender, "body": f"drain {n}"}).json()["id"]
                   for n in range(8)]

            def statuses() -> dict[str, Message]:
                with database.unit_of_work() as session:
                    return {m.id: m for m in session.scalars(select(Message).where(Message.id.in_(ids)))}

            # given sends in the middle of Twilio's create
            in_twilio = wait_for(lambda: [m.id for m in statuses().values() if m.status == "sending"],
                                 "a send in Twilio's create")

            # when the worker is told to stop
            worker = stack.processes.pop("worker")
            tell(worker)
            assert worker.wait(timeout=60) == 0

            # then the sends it was running finished: Twilio has them and their sids are stored
            after = statuses()
            assert all(after[message_id].twilio_sid is not None for message_id in in_twilio)
            # and every send it had not started waits on a queue again, none held by the stopped process
            waiting = [m.id for m in after.values() if m.status == "accepted"]
            assert waiting and set(waiting) <= queued_sends(broker.client)
            assert not [key for key in broker.client.keys("dramatiq:__acks__.*") if broker.client.scard(key)]

            # when a new worker starts (the second half of a rolling restart)
            stack.start_worker()

            # then every message goes out once, and the ledger is clean
            wait_for(lambda: all(m.status == "delivered" and m.credits_charged is not None
                                 for m in statuses().values()), "every message delivered and settled")
            sent = simulated(stack)
            assert sent["duplicates"] == []
            assert sorted(m["body"] for m in sent["messages"]) == sorted(f"drain {n}" for n in range(8))
            verified = ledger_verify(stack)
            assert verified.returncode == 0, verified.stdout
        finally:
            broker.close()
            database.dispose()


def test_each_worker_process_beats_under_an_id_of_its_own(postgres_server, tmp_path):
    """dramatiq's dispatch script stamps a heartbeat under the broker's id at every fetch, and keeps the jobs a
    process fetched under that id until it acks them: a process that stalls while another beats under the same id
    would keep its fetched jobs. `creditq worker` builds the broker before dramatiq forks its processes."""
    # given a worker of two processes, idle, and nothing else on the stack at work (the web beats only as it enqueues)
    with Stack(postgres_server, tmp_path, database_name="e2e_worker_ids", worker_processes=2) as stack:
        broker = stack.broker()
        try:
            client = broker.client

            # when the ids that beat in the last two seconds are read, once both processes poll their queues
            def beating() -> set[bytes]:
                seconds, micros = client.time()
                now = seconds * 1000 + micros // 1000
                return set(client.zrangebyscore("dramatiq:__heartbeats__", now - 2_000, "+inf"))

            ids = wait_for(lambda: beats if len(beats := beating()) >= 2 else None, "two processes beating", 30)
        finally:
            broker.close()

    # then each process beats under an id of its own (the web's, should it have enqueued meanwhile, is a third)
    assert len(ids) >= 2


def test_the_web_answers_503_for_readiness_when_redis_goes_away(postgres_server, tmp_path):
    """A load balancer's readiness probe sees Redis go away and come back; liveness never fails."""
    with Stack(postgres_server, tmp_path, database_name="e2e_readiness", worker_processes=1) as stack:
        assert requests.get(f"{stack.url}/healthz", timeout=10).status_code == 200
        stack.redis.stop()
        try:
            ready = wait_for(lambda: [r for r in [requests.get(f"{stack.url}/healthz", timeout=10)]
                                      if r.status_code == 503], "not ready")
            assert ready[0].json()["away"] == ["redis"]
            assert requests.get(f"{stack.url}/livez", timeout=10).status_code == 200
        finally:
            stack.redis.start()
        wait_for(lambda: requests.get(f"{stack.url}/healthz", timeout=10).status_code == 200, "ready again")


