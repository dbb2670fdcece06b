"""Memory of the forked servers, idle (`python bench/forked_memory.py [--processes 4]`).

`creditq worker` and `creditq web --processes N` import what their processes run before forking them, so the
processes share those pages. Here each command runs with N processes on a throw-away PostgreSQL and an embedded
Redis; once the tree's PSS has held still for two seconds (every process booted and warmed up), it prints the PSS of
the whole tree (each shared page counted once, shared among its processes) beside its RSS summed over the processes
(each shared page counted in every process that maps it: what the tree would hold if each process had its own
copy), and each process's RSS. Asserts nothing.
"""

import argparse
import os
import signal
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import psutil  # noqa: E402

from bench.processes import ROOT, spawn, wait_for  # noqa: E402
from shared.db import Database  # noqa: E402
from shared.embedded_redis import EmbeddedRedis  # noqa: E402
from shared.models import Base  # noqa: E402
from tests.support.ports import free_port  # noqa: E402
from tests.support.postgres import TemporaryPostgres  # noqa: E402

STILL_SECONDS = 2.0
BOOT_SECONDS = 60.0
MB = 2**20


def tree_of(pid: int) -> list[psutil.Process]:
    parent = psutil.Process(pid)
    return [parent, *parent.children(recursive=True)]


def settled_memory(pid: int) -> tuple[int, int, list[int]]:
    """(PSS of the tree, RSS summed, each process's RSS) once the tree's PSS has held still for STILL_SECONDS."""
    last, still_since, deadline = -1, time.monotonic(), time.monotonic() + BOOT_SECONDS
    while time.monotonic() < deadline:
        tree = tree_of(pid)
        pss = sum(process.memory_full_info().pss for process in tree)
        if abs(pss - last) > MB:
            last, still_since = pss, time.monotonic()
        elif time.monotonic() - still_since >= STILL_SECONDS:
            break
        time.sleep(0.5)
    rss = [process.memory_info().rss for process in tree]
    return last, sum(rss), rss


def measure(env: dict, directory: str, *command: str, ready_url: str | None = None) -> tuple[int, int, list[int]]:
    process = spawn(env, directory, *command)
    try:
        if ready_url:
            wait_for(ready_url)
        return settled_memory(process.pid)
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(60)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processes", type=int, default=4)
    args = parser.parse_args()
    n = str(args.processes)
    with TemporaryPostgres() as postgres, tempfile.TemporaryDirectory() as directory:
        redis_server = EmbeddedRedis(Path(directory) / "redis").start()
        try:
            database_url = postgres.create_database("bench_forked_memory")
            Base.metadata.create_all(Database(database_url).engine)
            port = free_port()
            env = {**os.environ, "PYTHONPATH": str(ROOT),
                   "DATABASE_URL": database_url, "REDIS_URL": redis_server.url, "PORT": str(port),
                   "CREDITQ_WORKER_METRICS_PORT": str(free_port()), "CREDITQ_DATA_DIR": str(Path(directory) / "data"),
                   "CREDITQ_ADMIN_KEY": "bench-operator-key-0123456789"}
            figures = {
                f"creditq web --processes {n}": measure(env, directory, "web", "--processes", n,
                                                        ready_url=f"http://127.0.0.1:{port}/healthz"),
                f"creditq worker --processes {n} --threads 4": measure(env, directory, "worker", "--processes", n,
                                                                       "--threads", "4"),
            }
        finally:
            redis_server.stop()
    print(f"idle, once booted; {os.cpu_count()} CPUs, load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"{'':<42} {'PSS of the tree':>16} {'RSS summed':>12}   each process's RSS (the parent first)")
    for name, (pss, rss_sum, each) in figures.items():
        print(f"{name:<42} {pss / MB:>13.0f} MB {rss_sum / MB:>9.0f} MB   "
              + ", ".join(f"{rss / MB:.0f}" for rss in each) + " MB")


if __name__ == "__main__":
    main()
