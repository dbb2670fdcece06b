"""Settled messages per second with 1, 2 and 4 worker processes on this machine, and what each resource did
meanwhile: the CPU of every process (web, each worker process, PostgreSQL's backends, Redis, the simulator) as a
share of one core, the whole machine's busy share, PostgreSQL's lock waits (pg_stat_activity sampled every
100 ms: backends waiting on a heavyweight lock, on average, and the commonest wait events) and the load average.

For each count a fresh stack (bench/pipeline.py's settings, its PostgreSQL database of its own) takes the
messages with its worker stopped, so the send jobs wait in Redis; then `creditq worker --processes N` starts
and the clock runs from the first message claimed to the last one settled: the intake is not counted, the
status callbacks (the web process applies them, and settles) are. Prints a table and where the curve bends;
asserts nothing.

    PYTHONPATH=. .venv/bin/python bench/scale.py [--messages 2000] [--counts 1,2,4] [--threads 8]
"""

import argparse
import asyncio
import os
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import psutil
from sqlalchemy import func, select, text

from bench.pipeline import ENV, create_accounts, pipeline_pids, post_all, settled_count
from bench.processes import cpu_seconds
from shared.db import Database
from shared.models import Message
from tests.support.postgres import TemporaryPostgres
from tests.support.stack import Stack

BUSY = 0.9  # a process using this share of a core, or the machine this share of its cores, is saturated


class LockWaits(threading.Thread):
    """pg_stat_activity of the bench database every 100 ms: backends waiting on a heavyweight lock (row,
    transaction id, tuple: one writer waiting for another's commit) and every wait event seen."""

    def __init__(self, database: Database):
        super().__init__(daemon=True)
        self.database = database
        self.samples = 0
        self.lock_waiters = 0
        self.events: Counter[str] = Counter()
        self.running = True

    def run(self) -> None:
        query = text("SELECT wait_event_type, wait_event FROM pg_stat_activity WHERE datname = current_database()"
                     " AND state = 'active' AND pid <> pg_backend_pid()")
        while self.running:
            with self.database.unit_of_work() as session:
                rows = session.execute(query).all()
            self.samples += 1
            for wait_type, event in rows:
                if wait_type is not None:
                    self.events[f"{wait_type}:{event}"] += 1
                    self.lock_waiters += wait_type == "Lock"
            time.sleep(0.1)

    def stop(self) -> None:
        self.running = False
        self.join()


@dataclass
class Run:
    processes: int
    rate: float = 0.0
    seconds: float = 0.0
    cores: dict[str, float] = field(default_factory=dict)  # process name: share of one core over the run
    machine_busy: float = 0.0  # share of all the machine's cores busy (every process, ours or not)
    lock_waiters: float = 0.0  # backends waiting on a heavyweight lock, on average
    wait_events: list[tuple[str, float]] = field(default_factory=list)  # the commonest, backends on average
    load: tuple[tuple[float, float, float], tuple[float, float, float]] = ((0, 0, 0), (0, 0, 0))


def measured_processes(stack: Stack, postgres: TemporaryPostgres) -> dict[str, int]:
    """web, each worker process (the forks of `creditq worker`; not the parent, which only waits for them, nor the
    fork serving its metrics port), PostgreSQL (the postmaster and its backends), Redis and the simulator, by name."""
    pids = pipeline_pids(stack, postgres)
    worker = psutil.Process(pids.pop("worker"))
    forks = sorted(child.pid for child in worker.children()
                   if not any(c.laddr.port == stack.worker_metrics_port for c in child.net_connections("tcp")))
    pids.update({f"worker process {n}": pid for n, pid in enumerate(forks, 1)})
    return pids


def accepted_count(database: Database) -> int:
    with database.unit_of_work() as session:
        return session.scalar(select(func.count()).select_from(Message).where(Message.status == "accepted"))


def measure(postgres: TemporaryPostgres, processes: int, args: argparse.Namespace) -> Run:
    run = Run(processes)
    with tempfile.TemporaryDirectory() as directory, \
            Stack(postgres, Path(directory), database_name=f"scale_{processes}", worker_processes=processes,
                  worker_threads=args.threads, env=ENV) as stack:
        database = Database(stack.database_url, pool_size=2)
        stack.kill_worker()  # the messages wait in Redis until the measured workers start

        async def intake():
            async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
                senders = await create_accounts(session, stack.url, args.accounts)
                await post_all(session, stack.url, senders, args.messages, "scale")

        asyncio.run(intake())
        stack.start_worker()
        while accepted_count(database) == args.messages:  # the worker processes booting
            time.sleep(0.05)
        pids = measured_processes(stack, postgres)
        cpu_before = {name: cpu_seconds(pid) for name, pid in pids.items()}
        machine_before = psutil.cpu_times()
        waits = LockWaits(database)
        waits.start()
        run.load = (os.getloadavg(), run.load[1])
        started = time.perf_counter()
        while settled_count(database, "scale") < args.messages:
            if time.perf_counter() - started > args.timeout:
                raise SystemExit(f"{processes} worker processes did not settle {args.messages} messages "
                                 f"within {args.timeout:.0f} s")
            time.sleep(0.05)
        run.seconds = time.perf_counter() - started
        waits.stop()
        machine_after = psutil.cpu_times()
        run.load = (run.load[0], os.getloadavg())
        run.rate = args.messages / run.seconds
        run.cores = {name: (cpu_seconds(pid) - cpu_before[name]) / run.seconds for name, pid in pids.items()}
        busy = sum(machine_after) - machine_after.idle - machine_after.iowait
        busy_before = sum(machine_before) - machine_before.idle - machine_before.iowait
        run.machine_busy = (busy - busy_before) / (sum(machine_after) - sum(machine_before))
        run.lock_waiters = waits.lock_waiters / max(waits.samples, 1)
        run.wait_events = [(event, count / max(waits.samples, 1)) for event, count in waits.events.most_common(3)]
        database.dispose()
    return run


def saturated(run: Run) -> str:
    """The resources at their limit in this run, in words: the machine's CPUs first (when they are, every other
    figure waits on them, lock holders too), then single processes, then PostgreSQL's row locks."""
    cpus = os.cpu_count()
    found = []
    if run.machine_busy >= BUSY:
        found.append(f"the machine's {cpus} CPUs ({run.machine_busy:.0%} busy, "
                     f"{sum(run.cores.values()) / cpus:.0%} of them this stack's)")
    found += [f"the {name} process ({share:.0%} of a core)"
              for name, share in sorted(run.cores.items(), key=lambda item: -item[1]) if share >= BUSY]
    if run.lock_waiters >= 1:
        found.append(f"PostgreSQL row locks ({run.lock_waiters:.1f} backends waiting on average)")
    if found:
        return "; ".join(found)
    name, share = max(run.cores.items(), key=lambda item: item[1])
    return f"nothing (the busiest: the {name} process at {share:.0%} of a core, the machine {run.machine_busy:.0%})"


def bend(runs: list[Run]) -> str:
    """Each step's gain, and where adding worker processes first stops paying (less than 1.25x the rate of the
    count before), with what was at its limit there."""
    steps = ", ".join(f"{before.processes}->{after.processes}: {after.rate / before.rate:.2f}x"
                      for before, after in zip(runs, runs[1:]))
    for before, after in zip(runs, runs[1:]):
        if after.rate < before.rate * 1.25:
            return (f"gains {steps}; the curve bends between {before.processes} and {after.processes} worker "
                    f"processes ({before.rate:.0f} -> {after.rate:.0f} settled/s); at its limit with "
                    f"{before.processes}: {saturated(before)}")
    last = runs[-1]
    return (f"gains {steps}; no bend up to {last.processes} worker processes ({last.rate:.0f} settled/s); at its "
            f"limit there: {saturated(last)}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--counts", default="1,2,4", help="worker processes per run, comma-separated")
    parser.add_argument("--threads", type=int, default=8, help="threads per worker process")
    parser.add_argument("--accounts", type=int, default=10, help="sending accounts (each its own hot row)")
    parser.add_argument("--timeout", type=float, default=600, help="seconds a run may take to settle")
    args = parser.parse_args()
    with TemporaryPostgres() as postgres:
        runs = [measure(postgres, int(count), args) for count in args.counts.split(",")]

    print("\n$ " + " ".join([Path(sys.executable).name, *sys.argv]))
    print(f"creditq settled messages/s by worker processes ({args.threads} threads each; {args.messages} messages "
          f"queued first, {args.accounts} accounts; one web process, PostgreSQL, Redis, Twilio simulator; "
          f"{os.cpu_count()} CPUs)")
    for run in runs:
        print(f"\n{run.processes} worker process{'es' if run.processes > 1 else ''}: "
              f"{run.rate:.0f} settled messages/s ({run.seconds:.1f} s)")
        for name, share in run.cores.items():
            print(f"  CPU {name:<24}{share:>6.0%} of a core")
        print(f"  machine busy                {run.machine_busy:>6.0%} of {os.cpu_count()} CPUs "
              f"({sum(run.cores.values()) / os.cpu_count():.0%} this stack's)")
        print(f"  PostgreSQL lock waits       {run.lock_waiters:>6.2f} backends on average; commonest waits: "
              + (", ".join(f"{event} {share:.2f}" for event, share in run.wait_events) or "none"))
        print("  load average 1/5/15 min     " + " -> ".join(" ".join(f"{v:.2f}" for v in load) for load in run.load))
    print("\n" + bend(runs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
