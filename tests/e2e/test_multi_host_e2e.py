"""Many of each process, as on separate hosts: two `creditq web` behind a round-robin balancer, three
`creditq worker`, two `creditq scheduler`, each with its own HOME, data dir and working directory, sharing
nothing but DATABASE_URL, REDIS_URL and the Twilio simulator's URL (and the deployment's keys, which every
process of a deployment must have alike). 5,000 messages, a campaign and a month-end run across them.
"""

import asyncio
import itertools
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import requests
from sqlalchemy import func, select, update

from shared.billing.calendar import last_ended
from shared.models import Account, BillingRun, Entry, Message, PhoneNumber
from tests.e2e.test_send_pipeline_e2e import FINAL, ledger_verify, new_account, post_messages, simulated
from tests.support.ports import free_port
from tests.support.stack import ADMIN_KEY, ROOT, SECRET_KEY, Stack

pytestmark = pytest.mark.e2e

WEBS, WORKERS, SCHEDULERS = 2, 3, 2
ACCOUNTS, POSTED, CAMPAIGN_RECIPIENTS = 20, 4000, 1000  # 5,000 messages
CHARGED = ("sent", "delivered", "undelivered")  # what Twilio bills: it reached the carrier


class RoundRobin(threading.Thread):
    """A layer-4 load balancer: each new connection goes to the next web process, its bytes copied both ways."""

    def __init__(self, backends: list[int]):
        super().__init__(daemon=True)
        self.backends = itertools.cycle(backends)
        self.connections: Counter[int] = Counter()
        self.loop = asyncio.new_event_loop()
        self.listening = threading.Event()

    def run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.server = self.loop.run_until_complete(asyncio.start_server(self._serve, "127.0.0.1", 0))
        self.port = self.server.sockets[0].getsockname()[1]
        self.listening.set()
        self.loop.run_forever()

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.join(10)

    async def _serve(self, client_reader, client_writer) -> None:
        port = next(self.backends)
        self.connections[port] += 1
        try:
            backend_reader, backend_writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            client_writer.close()
            return
        await asyncio.gather(self._copy(client_reader, backend_writer), self._copy(backend_reader, client_writer))

    @staticmethod
    async def _copy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()


class Hosts(Stack):
    """PostgreSQL, Redis and the Twilio simulator, and creditq processes each started as on a host of its own.
    `url` is the balancer's, which is also the PUBLIC_BASE_URL Twilio's callbacks come back to."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.balancer: RoundRobin | None = None
        self.homes: dict[str, Path] = {}  # name: the home, data dir and working directory of a process
        self.schedulers: dict[str, str] = {}  # name: its metrics URL

    def start(self) -> None:
        self.redis.start()
        self.database_url = self.postgres_server.create_database(self.database_name)
        web_ports = [free_port() for _ in range(WEBS)]
        self.balancer = RoundRobin(web_ports)
        self.balancer.start()
        self.balancer.listening.wait(10)
        self.web_port = self.balancer.port
        self.env = {
            "PATH": os.environ["PATH"],
            "PYTHONPATH": str(ROOT),
            "DATABASE_URL": self.database_url,
            "REDIS_URL": self.redis.url,
            "TWILIO_API_BASE": self.simulator_url,
            "PUBLIC_BASE_URL": self.url,
            "CREDITQ_SIMULATOR_PORT": str(self.simulator_port),
            "CREDITQ_ADMIN_KEY": ADMIN_KEY,
            "CREDITQ_SECRET_KEY": SECRET_KEY,
            "CREDITQ_ENV": "development",
            "PAYMENT_GATEWAY": "simulated",
            "CREDITQ_NEW_ACCOUNT_DAYS": "0",  # minutes-old accounts sending hundreds each: no new-account cap
            "CREDITQ_SENDER_RATES": "long_code=100000,toll_free=100000,short_code=100000",
            "CREDITQ_SWEEP_STALE_SECONDS": "20",  # the sweepers re-drive what looks lost, racing the workers
            "TWILIO_SIM_CALLBACK_DELAY_MS": "50",
            "TWILIO_SIM_LOG_LEVEL": "WARNING",
        }
        with open(self.directory / "db-upgrade.log", "ab") as log:
            subprocess.run([sys.executable, "-m", "creditq", "db", "upgrade"], env=self.env, cwd=ROOT, check=True,
                           stdout=log, stderr=subprocess.STDOUT)
        self._spawn("twilio-sim", "twilio-sim")
        answering = {"twilio-sim": f"{self.simulator_url}/_sim/messages"}
        for n, port in enumerate(web_ports, 1):
            self._on_host(f"web-{n}", "web", PORT=str(port))
            answering[f"web-{n}"] = f"http://127.0.0.1:{port}/healthz"
        for n in range(1, WORKERS + 1):
            self._on_host(f"worker-{n}", "worker", "--processes", "1", "--threads", "8",
                          CREDITQ_WORKER_METRICS_PORT=str(free_port()))
        for n in range(1, SCHEDULERS + 1):
            port = free_port()
            self._on_host(f"scheduler-{n}", "scheduler", CREDITQ_SCHEDULER_METRICS_PORT=str(port))
            answering[f"scheduler-{n}"] = self.schedulers[f"scheduler-{n}"] = f"http://127.0.0.1:{port}/metrics"
        for name, url in answering.items():
            self._wait_for(url, name, timeout=90)

    def stop(self) -> None:
        super().stop()
        if self.balancer is not None:
            self.balancer.stop()

    def kill(self, name: str) -> None:
        """kill -9 a process and its children, as when its host goes down."""
        process = self.processes.pop(name)
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()

    def _on_host(self, name: str, *command: str, **env: str) -> None:
        """`creditq <command>` with a home, data dir and working directory no other process sees."""
        home = self.homes[name] = self.directory / name
        home.mkdir()
        self._spawn(name, *command, cwd=home, env={"HOME": str(home), "CREDITQ_DATA_DIR": str(home / "data"), **env})


@pytest.fixture(scope="module")
def stack(postgres_server, tmp_path_factory):
    with Hosts(postgres_server, tmp_path_factory.mktemp("hosts"), database_name="e2e_multi_host") as running:
        yield running


def scheduler_active(metrics_url: str) -> bool:
    for line in requests.get(metrics_url, timeout=10).text.splitlines():
        if line.startswith("creditq_scheduler_active "):
            return float(line.split()[1]) == 1.0
    raise AssertionError(f"no creditq_scheduler_active at {metrics_url}")


def wait_for(condition, what: str, stack: Hosts, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            tails = "\n".join(f"--- {name}\n{log[-1500:]}" for name, log in stack.logs().items())
            pytest.fail(f"not {what} within {timeout:.0f}s\n{tails}")
        time.sleep(1)


def active_schedulers(stack: Hosts) -> list[str]:
    return [name for name, url in stack.schedulers.items() if name in stack.processes and scheduler_active(url)]


def test_many_of_each_process_send_charge_and_close_each_month_once(stack, database, sim):
    # given accounts whose last month has ended (created 40 days ago), so month-end is due for each of them
    accounts = [new_account(stack, n, "5000") for n in range(ACCOUNTS)]
    with database.unit_of_work() as session:
        session.execute(update(Account).where(Account.id.in_([a for a, _, _ in accounts]))
                        .values(created_at=datetime.now(UTC) - timedelta(days=40)))
    sim(duplicate_callback_rate=0.1, out_of_order_rate=0.1,
        outcomes={"delivered": 0.9, "undelivered": 0.05, "failed": 0.05})

    # and the host of the one active scheduler goes down as the run begins
    first = active_schedulers(stack)
    assert len(first) == 1
    stack.kill(first[0])

    # when 4,000 messages are posted through the balancer to both webs, and one account sends a 1,000-text campaign
    _, campaign_headers, campaign_sender = accounts[0]
    campaign = requests.post(f"{stack.url}/v1/campaigns", headers=campaign_headers, timeout=60, json={
        "name": "Open house", "from": campaign_sender, "body": "Hi {{ first_name }}, open house Sunday at 2pm.",
        "recipients": [{"to": f"+1415666{n:04d}", "fields": {"first_name": f"Guest{n}"}}
                       for n in range(CAMPAIGN_RECIPIENTS)],
        "quiet_hours": {"start": "00:00", "end": "00:00"}})
    assert campaign.status_code == 202, campaign.text
    ids = post_messages(stack, [(headers, sender, f"multi-host {i} from {account_id}")
                                for i in range(POSTED // ACCOUNTS) for account_id, headers, sender in accounts])
    assert len(set(ids)) == POSTED

    # then every message, the campaign's too, ends final and settled, and every account's month closes
    def settled() -> bool:
        with database.unit_of_work() as session:
            return session.scalar(select(func.count()).select_from(Message).where(
                Message.status.in_(FINAL), Message.credits_charged.is_not(None))) == POSTED + CAMPAIGN_RECIPIENTS

    period = str(last_ended(datetime.now(UTC), "UTC"))

    def closed() -> bool:
        with database.unit_of_work() as session:
            return session.scalar(select(func.count()).select_from(BillingRun).where(
                BillingRun.step == "close", BillingRun.period == period)) >= ACCOUNTS

    wait_for(settled, "every message settled", stack, timeout=240)
    wait_for(closed, "every account's month closed", stack, timeout=120)

    # and each reached Twilio once (the simulator's own log of creates) and was charged once, what Twilio billed
    twilio = simulated(stack)
    assert twilio["duplicates"] == []
    with database.unit_of_work() as session:
        messages = list(session.execute(select(Message.id, Message.body, Message.account_id, Message.twilio_sid,
                                               Message.credits_charged)))
        usage = Counter(session.scalars(select(Entry.reference).where(Entry.kind == "usage")))
        usage_by_account = dict(session.execute(select(Entry.account_id, func.sum(Entry.amount))
                                                .where(Entry.kind == "usage").group_by(Entry.account_id)).all())
        closes = Counter(session.execute(select(BillingRun.account_id, BillingRun.period)
                                         .where(BillingRun.step == "close")).all())
        number_charges = Counter(session.execute(select(Entry.account_id, Entry.reference)
                                                 .where(Entry.kind == "month_end_charge")).all())
        number_costs = dict(session.execute(select(PhoneNumber.account_id, PhoneNumber.monthly_cost)).all())
    by_body = {m["body"]: m for m in twilio["messages"]}
    assert len(twilio["messages"]) == len(messages) == POSTED + CAMPAIGN_RECIPIENTS
    assert {m.body for m in messages} == set(by_body)
    for message in messages:
        sent = by_body[message.body]
        assert message.twilio_sid == sent["sid"]
        assert message.credits_charged == (sent["num_segments"] * 1000 if sent["status"] in CHARGED else 0)
        assert usage[message.id] == (1 if message.credits_charged else 0)
    charged = Counter()
    for message in messages:
        charged[message.account_id] += message.credits_charged
    assert {account: -int(amount) for account, amount in usage_by_account.items()} == +charged

    # and the standby took the calendar over: month-end closed each account's month once, charging its number once
    assert len(active_schedulers(stack)) == 1 and active_schedulers(stack) != first
    # (in a month's first days, accounts made 40 days ago have two months due: the one they were made in and the
    # last; both close, each once)
    assert set(closes.values()) == {1} and set(number_charges.values()) == {1}
    assert {account_id for account_id, closed in closes if closed == period} == {a for a, _, _ in accounts}
    assert {account_id for account_id, reference in number_charges if reference == f"numbers:{period}"} == {
        account_id for account_id, _, _ in accounts if number_costs[account_id]}
    # and no process kept anything on its host: every home, data dir and working directory is still empty
    assert {name: list(home.rglob("*")) for name, home in stack.homes.items()} == {name: [] for name in stack.homes}
    # and both webs took requests, and the ledger verifies
    assert len(stack.balancer.connections) == WEBS
    verify = ledger_verify(stack)
    assert verify.returncode == 0, verify.stdout + verify.stderr
