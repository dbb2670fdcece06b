"""`creditq web` as two processes on one port (CREDITQ_WEB_PROCESSES=2, PostgreSQL): both serve at the web's nice,
/metrics counts the requests of both, one killed -9 is replaced while the other goes on, and SIGTERM drains each."""

import os
import re
import signal
from concurrent.futures import ThreadPoolExecutor

import psutil
import psycopg
import pytest
import requests

from tests.e2e.test_graceful_shutdown_e2e import FAST_SENDERS, refuses_connections, stored_messages, wait_for
from tests.e2e.test_send_pipeline_e2e import new_account, thread_nices
from tests.support.priority import can_step_forward_to
from tests.support.stack import ADMIN_KEY, Stack

pytestmark = pytest.mark.e2e

TWO_PROCESSES = {**FAST_SENDERS, "CREDITQ_WEB_PROCESSES": "2"}


@pytest.fixture(scope="module")
def stack(postgres_server, tmp_path_factory):
    with Stack(postgres_server, tmp_path_factory.mktemp("stack"), database_name="e2e_web_processes",
               worker_processes=1, env=TWO_PROCESSES) as running:
        yield running


def web_processes(stack) -> list[psutil.Process]:
    """The processes serving the port once there are two, each listening on it (after a kill, until its replacement
    is forked and has started: a process still starting would get none of the kernel's connections)."""
    parent = psutil.Process(stack.processes["web"].pid)

    def listening(child: psutil.Process) -> bool:
        try:
            return any(c.status == psutil.CONN_LISTEN and c.laddr.port == stack.web_port
                       for c in child.net_connections("tcp"))
        except psutil.NoSuchProcess:
            return False

    return wait_for(lambda: len(children := parent.children()) == 2 and all(map(listening, children)) and children,
                    "two web processes listening")


def accepted_messages(stack) -> float:
    metrics = requests.get(f"{stack.url}/metrics", headers={"Authorization": f"Bearer {ADMIN_KEY}"}, timeout=30).text
    found = re.search(r'^creditq_http_requests_total\{method="POST",route="/v1/messages",status="202"\} (\S+)$',
                      metrics, re.M)
    return float(found.group(1)) if found else 0.0


def post(stack, session: requests.Session, headers: dict, sender: str, body: str) -> requests.Response:
    return session.post(f"{stack.url}/v1/messages", headers=headers, timeout=60,
                        json={"to": "+14155550100", "from": sender, "body": body})


def connections_held(children: list[psutil.Process], port: int) -> dict[int, int]:
    """How many of the clients' connections each process holds."""
    return {child.pid: sum(1 for c in child.net_connections("tcp")
                           if c.status == psutil.CONN_ESTABLISHED and c.laddr.port == port) for child in children}


def test_the_processes_forked_run_at_the_webs_nice_every_thread_of_them(stack):
    # given two web processes, forked by a parent that stepped forward first (CREDITQ_WEB_NICE unset: -20)
    children = web_processes(stack)
    parent = psutil.Process(stack.processes["web"].pid)
    # then the parent and each child, every thread, run at -20 where the machine allows it, else at the nice they
    # started with, ours
    expected = -20 if can_step_forward_to(-20) else os.getpriority(os.PRIO_PROCESS, 0)
    for process in (parent, *children):
        assert thread_nices(process) == {expected}


def test_both_processes_serve_the_port_and_metrics_count_the_requests_of_both(stack):
    # given a web run as two processes
    children = web_processes(stack)
    _, headers, sender = new_account(stack, 1, "100")
    before = accepted_messages(stack)

    # when 16 clients post 5 messages each, each over a keep-alive connection of its own
    clients = [requests.Session() for _ in range(16)]
    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(lambda n: [post(stack, clients[n], headers, sender, f"spread {n}.{i}")
                                           for i in range(5)], range(16)))

    # then every message is accepted
    assert [answer.status_code for batch in answers for answer in batch] == [202] * 80
    # and the kernel spread the clients' connections over both processes
    held = connections_held(children, stack.web_port)
    assert all(count > 0 for count in held.values()), held
    # and /metrics, whichever process answers it, counts the 80 of both
    assert accepted_messages(stack) - before == 80
    for session in clients:
        session.close()


def test_a_web_process_killed_is_replaced_and_the_other_serves_meanwhile(stack):
    # given two web processes
    victim, survivor = web_processes(stack)
    _, headers, sender = new_account(stack, 2, "100")

    # when one is killed -9
    victim.kill()
    victim.wait(timeout=30)

    # then a new process takes its place and the other was never stopped
    replaced = web_processes(stack)
    assert survivor in replaced and victim.pid not in {p.pid for p in replaced}
    assert f"web process {victim.pid} was killed by signal 9; starting another" in stack.log("web")
    # and every message posted on fresh connections is accepted, by either process
    assert [post(stack, requests.Session(), headers, sender, f"after the kill {n}").status_code
            for n in range(20)] == [202] * 20


def test_sigterm_drains_every_web_process_and_answers_every_request_they_took(postgres_server, tmp_path):
    with Stack(postgres_server, tmp_path, database_name="e2e_web_processes_drain", worker_processes=1,
               env=TWO_PROCESSES) as stack:
        account_id, headers, sender = new_account(stack, 1, "100")
        children = web_processes(stack)
        libpq = stack.database_url.replace("postgresql+psycopg://", "postgresql://")
        with psycopg.connect(libpq) as lock, psycopg.connect(libpq, autocommit=True) as watcher:
            # given the messages table locked against writes, and 16 clients' requests waiting on it in the accept
            # batches of both processes
            lock.execute("LOCK TABLE messages IN SHARE MODE")
            clients = [requests.Session() for _ in range(16)]

            def send(n: int):
                try:
                    return n, post(stack, clients[n], headers, sender, f"drain {n}")
                except requests.ConnectionError:
                    return n, None

            with ThreadPoolExecutor(16) as pool:
                posted = [pool.submit(send, n) for n in range(16)]
                wait_for(lambda: watcher.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND datname = %s",
                    (stack.database_name,)).fetchone()[0] > 0, "an accept batch waiting on the messages table")
                wait_for(lambda: all(connections_held(children, stack.web_port).values()),
                         "requests in flight in both processes")

                # when the web is told to stop, and each process hears the process group's SIGINT too (Ctrl-C)
                web = stack.processes["web"]
                web.send_signal(signal.SIGTERM)
                for child in children:
                    child.send_signal(signal.SIGINT)

                # then no process listens any more, while the requests they took still wait
                wait_for(lambda: refuses_connections(stack.web_port), "refusing new connections")
                assert web.poll() is None
                lock.rollback()  # the table is free again: the batches commit
                results = [future.result() for future in posted]

        # and the web exits 0 with both processes gone
        assert web.wait(timeout=60) == 0
        assert not [child for child in children if child.is_running() and child.status() != psutil.STATUS_ZOMBIE]
        # and every request taken was answered 202 with a message that was stored; none was stored unanswered
        answered = {n: response.json()["id"] for n, response in results if response is not None}
        assert len(answered) >= 2 and all(response.status_code == 202 for _, response in results if response)
        assert stored_messages(libpq, account_id) == {f"drain {n}": message_id for n, message_id in answered.items()}
        assert "Traceback" not in stack.log("web")
