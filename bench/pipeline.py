"""Settled messages per second through the real processes, beside dramatiq's no-op jobs per second on the
same Redis, and POST /v1/messages latency at a fixed open-loop rate. Prints a table; asserts nothing.

    PYTHONPATH=. /work/venv/bin/python bench/pipeline.py [--messages 2000] [--rate 500] [--seconds 10]
"""

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import aiohttp
import dramatiq
import psutil
from sqlalchemy import func, select

from shared.db import Database
from shared.models import Message
from tests.support.postgres import TemporaryPostgres
from tests.support.stack import ADMIN_KEY, ROOT, Stack

OPERATOR = {"Authorization": f"Bearer {ADMIN_KEY}"}
ENV = {"CREDITQ_SENDER_RATES": "long_code=100000,toll_free=100000,short_code=100000",
       "TWILIO_SIM_CALLBACK_DELAY_MS": "300"}  # Twilio reports after ~1 s; a callback before the sid is stored waits for reconciliation


class PeakRss:
    """Samples the resident memory of each process tree every 200 ms; keeps the peak per name."""

    def __init__(self, processes: dict[str, subprocess.Popen]):
        self.processes = processes
        self.peaks: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.2):
            for name, process in list(self.processes.items()):
                try:
                    root = psutil.Process(process.pid)
                    rss = sum(p.memory_info().rss for p in [root, *root.children(recursive=True)])
                except psutil.Error:
                    continue
                self.peaks[name] = max(self.peaks.get(name, 0), rss)

    def stop(self) -> dict[str, int]:
        self._stop.set()
        self._thread.join()
        return self.peaks


def noop_throughput(stack: Stack, jobs: int) -> float:
    """jobs/s of a no-op actor run by `dramatiq` with the stack's processes and threads, on its Redis."""
    env = {**stack.env, "PYTHONPATH": str(ROOT)}
    workers = subprocess.Popen([sys.executable, "-m", "dramatiq", "bench.noop_actors", "--processes",
                                str(stack.worker_processes), "--threads", str(stack.worker_threads)],
                               env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               start_new_session=True)
    try:
        os.environ["REDIS_URL"] = stack.redis.url
        from bench import noop_actors

        time.sleep(3)  # let the workers boot
        started = time.perf_counter()
        for _ in range(jobs):
            noop_actors.noop.send()
        noop_actors.broker.join(noop_actors.QUEUE, timeout=600_000)
        return jobs / (time.perf_counter() - started)
    finally:
        os.killpg(workers.pid, 15)
        workers.wait()


async def create_accounts(session: aiohttp.ClientSession, url: str, count: int) -> list[tuple[dict, str]]:
    senders = []
    for n in range(count):
        async with session.post(f"{url}/v1/accounts", headers=OPERATOR,
                                json={"name": f"bench {n}", "overdraft": {"policy": "postpaid"}}) as response:
            created = await response.json()
        sender = f"+1415556{n:04d}"
        async with session.post(f"{url}/v1/accounts/{created['id']}/numbers", headers=OPERATOR,
                                json={"phone": sender, "type": "short_code"}) as response:
            assert response.status == 201, await response.text()
        senders.append(({"Authorization": f"Bearer {created['api_key']}"}, sender))
    return senders


async def post_all(session, url: str, senders, count: int, tag: str, concurrency: int = 32) -> None:
    queue = list(range(count))

    async def poster():
        while queue:
            i = queue.pop()
            headers, sender = senders[i % len(senders)]
            async with session.post(f"{url}/v1/messages", headers=headers,
                                    json={"to": "+14155550100", "from": sender, "body": f"{tag} {i}"}) as response:
                assert response.status == 202, await response.text()

    await asyncio.gather(*(poster() for _ in range(concurrency)))


async def open_loop_latency(session, url: str, senders, rate: int, seconds: float) -> list[float]:
    """Fire POSTs at a fixed rate whatever the answers' pace (open loop); latencies in seconds."""
    latencies: list[float] = []
    errors = 0

    async def one(i: int) -> None:
        nonlocal errors
        headers, sender = senders[i % len(senders)]
        started = time.perf_counter()
        async with session.post(f"{url}/v1/messages", headers=headers,
                                json={"to": "+14155550100", "from": sender, "body": f"latency {i}"}) as response:
            await response.read()
            if response.status != 202:
                errors += 1
        latencies.append(time.perf_counter() - started)

    tasks = []
    start = time.perf_counter()
    for i in range(int(rate * seconds)):
        delay = start + i / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(i)))
    await asyncio.gather(*tasks)
    if errors:
        print(f"  ({errors} POSTs did not answer 202)")
    return latencies


def settled_count(database: Database, tag: str) -> int:
    with database.unit_of_work() as session:
        return session.scalar(select(func.count()).select_from(Message).where(
            Message.body.like(f"{tag} %"), Message.credits_charged.is_not(None)))


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--noop-jobs", type=int, default=10000)
    parser.add_argument("--rate", type=int, default=500)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--threads", type=int, default=8)
    args = parser.parse_args()

    with TemporaryPostgres() as postgres, tempfile.TemporaryDirectory() as directory, \
            Stack(postgres, Path(directory), database_name="bench", worker_processes=args.processes,
                  worker_threads=args.threads, env=ENV) as stack:
        database = Database(stack.database_url, pool_size=2)
        rss = PeakRss(stack.processes)
        noop = noop_throughput(stack, args.noop_jobs)

        async def drive():
            connector = aiohttp.TCPConnector(limit=0)
            async with aiohttp.ClientSession(connector=connector) as session:
                senders = await create_accounts(session, stack.url, 10)
                started = time.perf_counter()
                await post_all(session, stack.url, senders, args.messages, "pipeline")
                posted = time.perf_counter() - started
                while settled_count(database, "pipeline") < args.messages:
                    if time.perf_counter() - started > 180:
                        raise SystemExit("the pipeline did not settle every message within 3 minutes")
                    await asyncio.sleep(0.2)
                settled = args.messages / (time.perf_counter() - started)
                latencies = await open_loop_latency(session, stack.url, senders, args.rate, args.seconds)
                return posted, settled, latencies

        posted, settled, latencies = asyncio.run(drive())
        peaks = rss.stop()
        database.dispose()

    print(f"\ncreditq send pipeline ({args.processes} worker processes x {args.threads} threads, "
          f"PostgreSQL, Redis, Twilio simulator; {os.cpu_count()} CPUs)")
    print(f"{'dramatiq no-op jobs/s (same Redis, same workers)':<58}{noop:>10.0f}")
    print(f"{'settled messages/s end to end (' + str(args.messages) + ' messages)':<58}{settled:>10.0f}"
          f"   ({settled / noop:.2f} x no-op)")
    print(f"{'  of which POSTing them took (s)':<58}{posted:>10.1f}")
    print(f"{'POST /v1/messages p50 at ' + str(args.rate) + ' req/s open loop (ms)':<58}"
          f"{percentile(latencies, 50) * 1000:>10.1f}")
    print(f"{'POST /v1/messages p99 at ' + str(args.rate) + ' req/s open loop (ms)':<58}"
          f"{percentile(latencies, 99) * 1000:>10.1f}")
    for name, peak in sorted(peaks.items()):
        print(f"{'peak RSS ' + name + ' (MiB)':<58}{peak / 2**20:>10.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
