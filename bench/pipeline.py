"""Settled messages per second through the real processes, beside dramatiq's no-op jobs per second on the
same Redis with the same worker processes and threads; then the intake alone: POST /v1/messages latency at
fixed open-loop rates (measured from each request's scheduled time, so queueing in the client counts too)
with the worker stopped, so only the web process, PostgreSQL and Redis work and the send jobs pile up in
Redis; with --with-workers the workers keep sending meanwhile, so the web process also answers their
Twilio status callbacks, as in production. For the end-to-end phase, the CPU each process spent per settled
message (web, worker, PostgreSQL and Redis, each with its children; the simulator apart, since Twilio is not
ours to run) and PostgreSQL's transactions per message. Also the peak RSS of each process and the load
average, since the machine may be shared. Beside each rate's latencies, the share of those POSTs the web itself
answered within 10, 25 and 50 ms by its own clock (its metrics, from the handler's start): what the client waited
beyond that was spent before the handler ran (the client, the kernel, the web's event loop); and the load
generator's own lag, each POST's start against its schedule, which is part of the latency. The load generator
stands in for clients on other machines but shares these cores, so it runs as a process in a session of its own
at --client-nice (-20 by default, as high as the web steps forward; 0 lets it queue for a core behind the stack
it measures). The header gives the nice the web, the worker and the load generator run at (CREDITQ_WEB_NICE,
CREDITQ_WORKER_NICE in the environment). Prints a table; asserts nothing.

    PYTHONPATH=. .venv/bin/python bench/pipeline.py [--messages 2000] [--rates 100,300,500] [--seconds 10]
        [--intake-only]   # skip the no-op and end-to-end phases
        [--with-workers]  # the intake phase with the workers running
        [--web-processes 2]  # CREDITQ_WEB_PROCESSES (the web's figures are its whole process tree's)
        [--profile web.txt]  # py-spy record --gil of the web process during the intake phase (collapsed stacks)
        [--profile-pipeline DIR]  # py-spy record --gil of web and worker processes in the end-to-end phase
        [--statements 15]  # PostgreSQL's busiest statements of the end-to-end phase (pg_stat_statements)
        [--client-nice 0]  # the load generator's nice (below 0 needs CAP_SYS_NICE, else it keeps the bench's)
"""

import argparse
import asyncio
import multiprocessing
import os
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import aiohttp
import psutil
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import func, select, text

from bench.processes import cpu_seconds, percentile, profile, stop_profiling
from shared.config import Settings
from shared.cpu_priority import set_cpu_priority
from shared.db import Database
from shared.models import Message
from tests.support.postgres import STATEMENT_STATISTICS, TemporaryPostgres
from tests.support.stack import ADMIN_KEY, ROOT, Stack

OPERATOR = {"Authorization": f"Bearer {ADMIN_KEY}"}
ENV = {"CREDITQ_SENDER_RATES": "long_code=100000,toll_free=100000,short_code=100000",
       "TWILIO_SIM_CALLBACK_DELAY_MS": "300",  # Twilio's first report comes a few hundred ms after the create
       "TWILIO_SIM_LOG_LEVEL": "WARNING",
       "CREDITQ_NEW_ACCOUNT_DAYS": "0",  # the accounts are minutes old and send thousands: no new-account cap
       "CREDITQ_KEY_RATE_LIMIT": "100000"}  # never refuses, so its Redis round trip is still measured


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
    """jobs/s of a no-op actor run by `dramatiq` with the stack's processes and threads, on its Redis.

    The jobs are queued before the workers start, and the clock runs from the first job taken to the
    last one acknowledged, so neither the workers' boot nor the enqueueing is counted.
    """
    os.environ["REDIS_URL"] = stack.redis.url
    from bench import noop_actors

    for _ in range(jobs):
        noop_actors.noop.send()
    env = {**stack.env, "PYTHONPATH": str(ROOT)}
    workers = subprocess.Popen([sys.executable, "-m", "dramatiq", "bench.noop_actors", "--processes",
                                str(stack.worker_processes), "--threads", str(stack.worker_threads)],
                               env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               start_new_session=True)
    try:
        broker = noop_actors.broker
        while (left := broker.do_qsize(noop_actors.QUEUE)) >= jobs:
            time.sleep(0.005)
        started = time.perf_counter()
        broker.join(noop_actors.QUEUE, interval=5, timeout=600_000)
        return left / (time.perf_counter() - started)
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
                                json={"phone": sender, "type": "long_code"}) as response:
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


async def open_loop_latency(session, url: str, senders, rate: int,
                            seconds: float) -> tuple[list[float], list[float], int]:
    """Fire POSTs at a fixed rate whatever the answers' pace (open loop); each latency counts from the
    request's scheduled time, so a late start (client or server behind) is not hidden. Latencies, and the load
    generator's own lag (each POST's start against its schedule, a part of its latency), in seconds."""
    latencies: list[float] = []
    lags: list[float] = []
    errors = 0

    async def one(i: int, scheduled: float) -> None:
        nonlocal errors
        headers, sender = senders[i % len(senders)]
        lags.append(time.perf_counter() - scheduled)
        try:
            async with session.post(f"{url}/v1/messages", headers=headers,
                                    json={"to": "+14155550100", "from": sender, "body": f"latency {i}"}) as response:
                await response.read()
                errors += response.status != 202
        except aiohttp.ClientError:
            errors += 1
        latencies.append(time.perf_counter() - scheduled)

    tasks = []
    start = time.perf_counter() + 0.1
    for i in range(int(rate * seconds)):
        scheduled = start + i / rate
        delay = scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(i, scheduled)))
    await asyncio.gather(*tasks)
    return latencies, lags, errors


def _load_generator_session(nice: int) -> None:
    """In the load generator's process: a session of its own, so its autogroup is its own too, at `nice`."""
    os.setsid()
    set_cpu_priority(nice)


def _open_loop(url: str, senders, rate: int, seconds: float) -> tuple[list[float], list[float], int]:
    async def fire():
        # A bounded keep-alive pool, as real clients have: requests beyond it wait in the client,
        # and that wait counts, since latency runs from each request's scheduled time.
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=64)) as session:
            return await open_loop_latency(session, url, senders, rate, seconds)

    return asyncio.run(fire())


class LoadGenerator:
    """open_loop_latency run in a process of its own at `nice` (see the module's docstring)."""

    def __init__(self, nice: int):
        self._pool = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"),
                                         initializer=_load_generator_session, initargs=(nice,))
        self.nice = self._pool.submit(os.getpriority, os.PRIO_PROCESS, 0).result()  # started, and at its nice

    async def latencies(self, url: str, senders, rate: int, seconds: float) -> tuple[list[float], list[float], int]:
        return await asyncio.wrap_future(self._pool.submit(_open_loop, url, senders, rate, seconds))

    def close(self) -> None:
        self._pool.shutdown()


def settled_count(database: Database, tag: str) -> int:
    with database.unit_of_work() as session:
        return session.scalar(select(func.count()).select_from(Message).where(
            Message.body.like(f"{tag} %"), Message.credits_charged.is_not(None)))


def transactions(database: Database) -> int:
    """Transactions committed or rolled back on the bench database so far (pg_stat_database)."""
    with database.unit_of_work() as session:
        return session.scalar(text("SELECT xact_commit + xact_rollback FROM pg_stat_database"
                                   " WHERE datname = current_database()"))


def pipeline_pids(stack: Stack, postgres: TemporaryPostgres) -> dict[str, int]:
    """The processes whose CPU a settled message costs, by name: the postmaster stands for PostgreSQL's backends."""
    return {"web": stack.processes["web"].pid, "worker": stack.processes["worker"].pid,
            "PostgreSQL": postgres.postmaster_pid,
            "Redis": stack.redis.process.pid, "twilio-sim": stack.processes["twilio-sim"].pid}


def sessions_opened(database: Database) -> int:
    """PostgreSQL sessions ever opened on the bench database (each is a new connection's start-up cost)."""
    with database.unit_of_work() as session:
        return session.scalar(text("SELECT sessions FROM pg_stat_database WHERE datname = current_database()"))


def reset_statements(database: Database) -> None:
    with database.unit_of_work() as session:
        session.execute(text("CREATE EXTENSION IF NOT EXISTS pg_stat_statements"))
        session.execute(text("SELECT pg_stat_statements_reset()"))


def busiest_statements(database: Database, count: int) -> list[tuple[str, int, float]]:
    """(query, calls, total execution seconds) of the bench database's statements with the most execution time,
    the functions' inner statements included."""
    with database.unit_of_work() as session:
        return [(" ".join(row.query.split())[:110], row.calls, row.total / 1000) for row in session.execute(text(
            "SELECT query, calls, total_exec_time AS total FROM pg_stat_statements WHERE dbid = "
            "(SELECT oid FROM pg_database WHERE datname = current_database()) ORDER BY total_exec_time DESC"
            " LIMIT :count"), {"count": count})]


HANDLED_WITHIN = (0.01, 0.025, 0.05)  # seconds: buckets of the web's creditq_http_request_seconds


async def handled_within(session, url: str) -> dict[float, float]:
    """POST /v1/messages answered so far by the web's own clock (its metrics middleware, from the handler's start to
    its answer), as {bucket's upper bound: count}, with the total under infinity."""
    async with session.get(f"{url}/metrics", headers=OPERATOR) as response:
        text = await response.text()
    counts = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if (sample.name == "creditq_http_request_seconds_bucket" and sample.labels.get("method") == "POST"
                    and sample.labels.get("route") == "/v1/messages"):
                counts[float(sample.labels["le"])] = sample.value
    return counts


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--noop-jobs", type=int, default=10000)
    parser.add_argument("--rates", default="100,300,500", help="open-loop POST rates (req/s), comma-separated")
    parser.add_argument("--seconds", type=float, default=10, help="per open-loop rate")
    parser.add_argument("--intake-only", action="store_true", help="only the intake phase")
    parser.add_argument("--accounts", type=int, default=10, help="sending accounts (each its own hot row)")
    parser.add_argument("--processes", type=int, default=Settings.worker_processes,
                        help="worker processes (default: creditq worker's)")
    parser.add_argument("--web-processes", type=int, default=1, help="CREDITQ_WEB_PROCESSES of the web")
    parser.add_argument("--threads", type=int, default=Settings.worker_threads,
                        help="threads per worker process (default: creditq worker's)")
    parser.add_argument("--with-workers", action="store_true", help="keep the workers running in the intake phase")
    parser.add_argument("--profile", type=Path, help="py-spy's collapsed stacks of the web process, intake phase")
    parser.add_argument("--profile-pipeline", type=Path,
                        help="a directory for py-spy's collapsed stacks of web and worker, end-to-end phase")
    parser.add_argument("--statements", type=int, default=0,
                        help="print PostgreSQL's N statements of the end-to-end phase with the most execution time")
    parser.add_argument("--client-nice", type=int, default=-20, choices=range(-20, 20), metavar="-20..19",
                        help="the load generator's nice, in a session of its own (below 0 needs CAP_SYS_NICE)")
    args = parser.parse_args()
    rates = [int(rate) for rate in args.rates.split(",")]
    load = {"at start": os.getloadavg()}
    per_message: dict[str, float] = {}  # the pipeline's CPU ms per settled message by process, and transactions

    statements: list = []
    with TemporaryPostgres(settings=STATEMENT_STATISTICS if args.statements else None) as postgres, \
            tempfile.TemporaryDirectory() as directory, \
            Stack(postgres, Path(directory), database_name="bench", worker_processes=args.processes,
                  worker_threads=args.threads, env={**ENV, "CREDITQ_WEB_PROCESSES": str(args.web_processes)}) as stack:
        database = Database(stack.database_url, pool_size=2)
        rss = PeakRss(stack.processes)
        if not args.intake_only:
            noop = noop_throughput(stack, args.noop_jobs)
            load["after no-op"] = os.getloadavg()

        async def drive():
            connector = aiohttp.TCPConnector(limit=0)
            async with aiohttp.ClientSession(connector=connector) as session:
                senders = await create_accounts(session, stack.url, args.accounts)
                if args.intake_only:
                    posted = settled = None
                else:
                    posted, settled = await pipeline(session, senders)
                    load["after pipeline"] = os.getloadavg()
                if not args.with_workers:
                    # The intake alone: no worker takes the jobs, so nothing but the accept competes for the CPUs.
                    stack.kill_worker()
                await post_all(session, stack.url, senders, 200, "warm-up")  # connections, key cache
            by_rate = {}
            web = psutil.Process(stack.processes["web"].pid)
            load["before intake"] = os.getloadavg()
            profilers = [profile(stack.processes["web"].pid, args.profile)] if args.profile else []
            for rate in rates:
                async with aiohttp.ClientSession() as metrics:
                    cpu, sessions = cpu_seconds(web.pid), sessions_opened(database)
                    handled = await handled_within(metrics, stack.url)
                    latencies, lags, errors = await load_generator.latencies(stack.url, senders, rate, args.seconds)
                    spent, opened = cpu_seconds(web.pid) - cpu, sessions_opened(database) - sessions
                    handled = {bound: count - handled.get(bound, 0)
                               for bound, count in (await handled_within(metrics, stack.url)).items()}
                by_rate[rate] = (latencies, lags, errors, spent / len(latencies), opened, handled)
                load[f"after {rate} req/s"] = os.getloadavg()
            stop_profiling(profilers)
            return posted, settled, by_rate

        async def pipeline(session, senders):
            pids = pipeline_pids(stack, postgres)
            cpu_before = {name: cpu_seconds(pid) for name, pid in pids.items()}
            transactions_before = transactions(database)
            if args.statements:
                reset_statements(database)
            profilers = []
            if args.profile_pipeline:
                args.profile_pipeline.mkdir(parents=True, exist_ok=True)
                profilers = [profile(pids[name], args.profile_pipeline / f"{name}.txt") for name in ("web", "worker")]
            started = time.perf_counter()
            await post_all(session, stack.url, senders, args.messages, "pipeline")
            posted = time.perf_counter() - started
            while settled_count(database, "pipeline") < args.messages:
                if time.perf_counter() - started > 180:
                    raise SystemExit("the pipeline did not settle every message within 3 minutes")
                await asyncio.sleep(0.1)
            rate = args.messages / (time.perf_counter() - started)
            stop_profiling(profilers)
            # the bench's own reads (settled_count, this one) are a few transactions in thousands
            per_message["transactions"] = (transactions(database) - transactions_before) / args.messages
            for name, pid in pids.items():
                per_message[name] = (cpu_seconds(pid) - cpu_before[name]) * 1000 / args.messages
            if args.statements:
                statements.extend(busiest_statements(database, args.statements))
            return posted, rate

        nices = {name: psutil.Process(stack.processes[name].pid).nice() for name in ("web", "worker")}
        load_generator = LoadGenerator(args.client_nice)
        nices["load generator"] = load_generator.nice
        try:
            posted, settled, by_rate = asyncio.run(drive())
        finally:
            load_generator.close()
        peaks = rss.stop()
        database.dispose()

    rows = []
    if not args.intake_only:
        rows += [
            ("dramatiq no-op jobs/s (same Redis, same workers)", f"{noop:.0f}"),
            (f"settled messages/s end to end ({args.messages} messages, {args.accounts} accounts)",
             f"{settled:.0f}   ({settled / noop:.2f} x no-op)"),
            ("  of which POSTing them took (s)", f"{posted:.1f}   ({args.messages / posted:.0f} POST/s)"),
            *((f"  CPU per settled message, {name} (ms)", f"{per_message[name]:.2f}")
              for name in ("web", "worker", "PostgreSQL", "Redis", "twilio-sim")),
            ("  CPU per settled message, all but the simulator (ms)",
             f"{sum(per_message[name] for name in ('web', 'worker', 'PostgreSQL', 'Redis')):.2f}"),
            ("  PostgreSQL transactions per settled message", f"{per_message['transactions']:.1f}"),
        ]
    for rate, (latencies, lags, errors, cpu_per_post, opened, handled) in by_rate.items():
        rows += [
            (f"intake ({'workers running' if args.with_workers else 'worker stopped'}): POST /v1/messages at "
             f"{rate} req/s, {args.seconds:g} s", ""),
            *((f"  p{p} (ms)", f"{percentile(latencies, p / 100) * 1000:.1f}") for p in (50, 95, 99)),
            *((f"  handled within {bound * 1000:g} ms by the web's own clock (%)",
               f"{100 * handled.get(bound, 0) / max(1, handled.get(float('inf'), 0)):.1f}")
              for bound in HANDLED_WITHIN),
            ("  the load generator's own lag, p99 (ms; a part of the latency)", f"{percentile(lags, 0.99) * 1000:.1f}"),
            ("  POSTs not answered 202", f"{errors} of {len(latencies)}"),
            ("  web process CPU per POST (ms; with workers: and callbacks)", f"{cpu_per_post * 1000:.2f}"),
            ("  PostgreSQL sessions opened meanwhile (every process)", f"{opened}"),
        ]
    rows += [
        *((f"peak RSS {name} (MiB)", f"{peak / 2**20:.0f}") for name, peak in sorted(peaks.items())),
        *((f"load average 1/5/15 min, {phase}", " ".join(f"{v:.2f}" for v in values))
          for phase, values in load.items()),
    ]
    if statements:  # execution time, lock waits included: a statement queued on a hot row shows here, not in CPU
        rows += [("PostgreSQL's busiest statements, end to end (execution time per settled message)", "")]
        rows += [(f"  {total / args.messages * 1e6:9.1f} us  {calls / args.messages:5.2f} calls  {query}", "")
                 for query, calls, total in statements]
    print("\n$ " + " ".join([Path(sys.executable).name, *sys.argv]))
    print(f"creditq send pipeline ({args.processes} worker processes x {args.threads} threads, "
          f"PostgreSQL, Redis, Twilio simulator; {os.cpu_count()} CPUs; "
          + ", ".join(f"{name} at nice {nice}" for name, nice in nices.items()) + ")")
    for name, value in rows:
        print(f"{name:<66}{value:>12}" if len(value) <= 12 else f"{name:<66}{value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
