"""A 100,000-recipient campaign through the real processes (`python bench/campaign.py [recipients] [--profile DIR]`).

Real PostgreSQL (tests.support.postgres) and Redis (the embedded server); `creditq web` and
`creditq worker` (campaigns queue only, so the send jobs stay in Redis to be counted) as
subprocesses. Reports seconds to accept the POST, seconds until every send job is enqueued, the
peak RSS of each process (and of the worker's processes summed, and their summed PSS, which counts a page the forked
processes share once), the load average, how many chunks
each worker process fanned out and how many ran at once (from the workers' chunk log lines), beside
the one-message-at-a-time enqueue rate (`broker.enqueue` per message) measured in the same run, and the CPU
seconds each process (with its children) spent from the POST until every send was enqueued.
With --profile DIR, py-spy's collapsed stacks of web and worker (GIL holders) from the POST until every send is
enqueued. Prints figures only; nothing here passes or fails.
"""

import argparse
import os
import re
import signal
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import dramatiq  # noqa: E402
import psutil  # noqa: E402
import redis  # noqa: E402
import requests  # noqa: E402
from dramatiq.brokers.redis import RedisBroker  # noqa: E402

from bench.processes import LoadAverage, cpu_seconds, profile, spawn, stop_profiling, wait_for  # noqa: E402
from shared.campaigns.bulk_queues import bulk_queue_for  # noqa: E402
from shared.db import Database  # noqa: E402
from shared.embedded_redis import EmbeddedRedis  # noqa: E402
from shared.ledger import book  # noqa: E402
from shared.ledger.accounts import Overdraft, create_account  # noqa: E402
from shared.models import Base, PhoneNumber  # noqa: E402
from tests.support.ports import free_port  # noqa: E402
from tests.support.postgres import TemporaryPostgres  # noqa: E402

ADMIN_KEY = "bench-operator-key-0123456789"
SENDER = "+14155550000"
WORKER_PROCESSES = int(os.environ.get("BENCH_WORKER_PROCESSES", "4"))
WORKER_THREADS = int(os.environ.get("BENCH_WORKER_THREADS", "4"))
ONE_AT_A_TIME = 5_000


class PeakRss(threading.Thread):
    """Samples a process tree: each process's own peak RSS and the tree's summed peak every 50 ms, and the tree's
    peak PSS (each shared page counted once, shared among its processes: the forked workers share their imports'
    pages, which the RSS sum counts once per process) once a second, with the tree's processes. PSS is costly to
    read (the kernel walks every mapping of the process): read every 50 ms, it took a core's third of system time
    from the processes measured."""

    def __init__(self, pid: int):
        super().__init__(daemon=True)
        self.process = psutil.Process(pid)
        self.peak = self.peak_pss = 0
        self.peaks: dict[int, int] = {}
        self.running = True

    def run(self) -> None:
        tree: list[psutil.Process] = []
        read_pss_at = 0.0
        while self.running:
            try:
                if time.monotonic() >= read_pss_at:
                    tree = [p for p in (self.process, *self.process.children(recursive=True)) if p.is_running()]
                    self.peak_pss = max(self.peak_pss, sum(p.memory_full_info().pss for p in tree))
                    read_pss_at = time.monotonic() + 1
                rss = {p.pid: p.memory_info().rss for p in tree}
                self.peak = max(self.peak, sum(rss.values()))
                for pid, value in rss.items():
                    self.peaks[pid] = max(self.peaks.get(pid, 0), value)
            except psutil.Error:
                read_pss_at = 0.0  # a process of the tree ended: list them again
            time.sleep(0.05)


CHUNK_LINE = re.compile(r"^(?P<at>\S+ \S+) .* chunk \d+: \d+ sends enqueued in (?P<ms>\d+) ms \(process (?P<pid>\d+)\)")


def chunk_spread(log: Path) -> tuple[dict[int, int], int, list[tuple[datetime, datetime]]]:
    """Chunks fanned out per worker process, the most that ran at the same moment, and each chunk's (start, end),
    from the chunk log lines."""
    per_process: dict[int, int] = {}
    spans = []
    for line in log.read_text(errors="replace").splitlines():
        if (match := CHUNK_LINE.match(line)) is None:
            continue
        pid = int(match["pid"])
        per_process[pid] = per_process.get(pid, 0) + 1
        end = datetime.strptime(match["at"], "%Y-%m-%d %H:%M:%S,%f")
        spans.append((end - timedelta(milliseconds=int(match["ms"])), end))
    edges = sorted([(start, 1) for start, _ in spans] + [(end, -1) for _, end in spans])
    running = most = 0
    for _, change in edges:
        running += change
        most = max(most, running)
    return per_process, most, spans


def main(recipients: int, profile_dir: Path | None) -> None:
    with TemporaryPostgres() as postgres, tempfile.TemporaryDirectory() as directory:
        redis_server = EmbeddedRedis(Path(directory) / "redis").start()
        database_url = postgres.create_database("bench_campaign")
        database = Database(database_url)
        Base.metadata.create_all(database.engine)
        account_id = seed(database, recipients)
        port = free_port()
        env = {**os.environ, "PYTHONPATH": str(ROOT), "DATABASE_URL": database_url, "REDIS_URL": redis_server.url,
               "PORT": str(port), "CREDITQ_ADMIN_KEY": ADMIN_KEY, "CREDITQ_DATA_DIR": str(Path(directory) / "data"),
               "CREDITQ_NEW_ACCOUNT_DAYS": "0"}  # the account is minutes old: no new-account cap
        processes = {
            "web": spawn(env, directory, "web"),
            "worker": spawn(env, directory, "worker", "--processes", str(WORKER_PROCESSES), "--threads", str(WORKER_THREADS),
                            "--queues", "campaigns"),
        }
        meters = {name: PeakRss(process.pid) for name, process in processes.items()}
        load = LoadAverage()
        for meter in [*meters.values(), load]:
            meter.start()
        try:
            wait_for(f"http://127.0.0.1:{port}/healthz")
            time.sleep(3)  # the worker processes import the actors
            load_at_start = os.getloadavg()[0]
            client = redis.Redis.from_url(redis_server.url)
            rate = one_at_a_time_rate(redis_server.url)
            csv_text = "to,first_name,agent\n" + "".join(
                f"+1212{200 + index // 10_000}{index % 10_000:04d},Name{index},Agent{index % 50}\n"
                for index in range(recipients))
            profilers = []
            if profile_dir:
                profile_dir.mkdir(parents=True, exist_ok=True)
                profilers = [profile(process.pid, profile_dir / f"{name}.txt") for name, process in processes.items()]
            pids = {**{name: process.pid for name, process in processes.items()},
                    "PostgreSQL": postgres.postmaster_pid,
                    "Redis": redis_server.process.pid}
            cpu_before = {name: cpu_seconds(pid) for name, pid in pids.items()}
            started, posted_at = time.monotonic(), datetime.now()  # the log lines' clock: local time
            response = requests.post(
                f"http://127.0.0.1:{port}/v1/campaigns", timeout=600, headers={"Authorization": f"Bearer {ADMIN_KEY}"},
                json={"name": "bench", "from": SENDER, "account_id": account_id, "csv": csv_text,
                      "quiet_hours": {"start": "00:00", "end": "00:00"},  # whatever the clock says, send now
                      "body": "Hi {{ first_name }}, {{ agent }} here: open house Sunday 2pm. Reply STOP to opt out."})
            accepted = time.monotonic() - started
            response.raise_for_status()
            sendable = response.json()["estimate"]["sendable"]
            queue_key = f"dramatiq:{bulk_queue_for(account_id)}.msgs"  # the queue the account's campaign texts go on
            while client.hlen(queue_key) < sendable and time.monotonic() - started < 600:
                time.sleep(0.05)
            enqueued = time.monotonic() - started
            cpu = {name: cpu_seconds(pid) - cpu_before[name] for name, pid in pids.items()}
            stop_profiling(profilers)
            queued = client.hlen(queue_key)
            time.sleep(0.5)
        finally:
            for meter in [*meters.values(), load]:
                meter.running = False
            for process in processes.values():
                os.killpg(process.pid, signal.SIGTERM)
                process.wait(timeout=30)
            redis_server.stop()
            database.dispose()
        chunks_per_process, most_at_once, spans = chunk_spread(Path(directory) / "worker.log")
    print(f"campaign of {recipients:,} recipients ({sendable:,} sendable), worker {WORKER_PROCESSES} processes x {WORKER_THREADS} threads")
    print(f"  accepted (POST answered 202):      {accepted:6.2f} s")
    print(f"  fully enqueued ({queued:,} send jobs): {enqueued:6.2f} s after the POST")
    print(f"  campaign enqueue rate:             {queued / max(enqueued - accepted, 1e-9):9,.0f} messages/s (fan-out)")
    print(f"  one-at-a-time enqueue (same run):  {rate:9,.0f} messages/s (broker.enqueue per message)")
    print("  CPU seconds, POST to all enqueued: " + ", ".join(f"{name} {seconds:.1f}" for name, seconds in cpu.items())
          + f" (two CPUs: {2 * enqueued:.1f} available)")
    print(f"  peak RSS web:                      {meters['web'].peak / 2**20:6.0f} MB")
    print(f"  peak RSS worker (all processes):   {meters['worker'].peak / 2**20:6.0f} MB")
    print(f"  peak PSS worker (all processes):   {meters['worker'].peak_pss / 2**20:6.0f} MB (shared pages once)")
    print("  peak RSS per process:              " + ", ".join(
        f"{name} {pid} {peak / 2**20:.0f} MB" for name, meter in meters.items() for pid, peak in meter.peaks.items()))
    print(f"  chunks per worker process:         {dict(sorted(chunks_per_process.items()))}; "
          f"at most {most_at_once} running at once")
    durations = sorted((end - start).total_seconds() for start, end in spans)
    print(f"  chunks ran from {(min(start for start, _ in spans) - posted_at).total_seconds():.2f} s to "
          f"{(max(end for _, end in spans) - posted_at).total_seconds():.2f} s after the POST; each took "
          f"{durations[len(durations) // 2]:.2f} s (median), {durations[-1]:.2f} s at most")
    print(f"  load average (1 min):              {load_at_start:.1f} at the POST, {load.peak:.1f} at most")


def seed(database: Database, recipients: int) -> str:
    now = datetime.now(UTC)
    with database.unit_of_work() as session:
        account, _ = create_account(session, name="Bench realty", timezone="America/New_York", plan_monthly_credits=0,
                                    plan_cycle="monthly", plan_rollover="none", overdraft=Overdraft("prepaid"),
                                    low_balance_threshold=0, now=datetime.now(UTC))
        session.add(PhoneNumber(account_id=account.id, phone=SENDER, type="long_code"))
        book.grant(session, account.id, recipients * 10_000, "purchase", granted_at=now, idempotency_key="bench")
        return account.id


def one_at_a_time_rate(redis_url: str) -> float:
    """What intake's per-message enqueue manages: one broker.enqueue (one Redis round trip) per message."""
    broker = RedisBroker(url=redis_url)
    started = time.monotonic()
    for index in range(ONE_AT_A_TIME):
        broker.enqueue(dramatiq.Message(queue_name="bench", actor_name="send_message", args=(f"msg_{index}",),
                                        kwargs={}, options={}))
    rate = ONE_AT_A_TIME / (time.monotonic() - started)
    broker.flush("bench")
    broker.close()
    return rate


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("recipients", type=int, nargs="?", default=100_000)
    parser.add_argument("--profile", type=Path, help="a directory for py-spy's collapsed stacks of web and worker")
    arguments = parser.parse_args()
    main(arguments.recipients, arguments.profile)
