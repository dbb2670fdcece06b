"""A 10,000-number voice broadcast beside a 10,000-recipient text campaign, through the real processes
(`PYTHONPATH=. .venv/bin/python bench/broadcast.py [numbers]`).

Real PostgreSQL and Redis; `creditq web` and `creditq worker` (the fan-out queues only: `broadcasts` and `campaigns`,
so the place and send jobs stay in Redis to be counted) as subprocesses. For each, one after the other on the same
processes: seconds to accept the POST, seconds until every job is enqueued, and the peak RSS of web and worker
while it ran. Prints figures only; nothing here passes or fails.
"""

import os
import signal
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import redis  # noqa: E402
import requests  # noqa: E402

from bench.campaign import ADMIN_KEY, SENDER, PeakRss, seed  # noqa: E402
from bench.processes import LoadAverage, spawn, wait_for  # noqa: E402
from shared.campaigns.bulk_queues import bulk_queue_for  # noqa: E402
from shared.db import Database  # noqa: E402
from shared.embedded_redis import EmbeddedRedis  # noqa: E402
from shared.models import Base  # noqa: E402
from tests.support.ports import free_port  # noqa: E402
from tests.support.postgres import TemporaryPostgres  # noqa: E402

NO_QUIET_HOURS = {"start": "00:00", "end": "00:00"}  # whatever the clock says, call now


def measure(client: redis.Redis, queue: str, expected: int, post) -> tuple[float, float, int]:
    """(seconds to the 202, seconds until `expected` jobs wait in `queue`, jobs there)."""
    started = time.monotonic()
    response = post()
    accepted = time.monotonic() - started
    response.raise_for_status()
    while client.hlen(f"dramatiq:{queue}.msgs") < expected and time.monotonic() - started < 600:
        time.sleep(0.05)
    return accepted, time.monotonic() - started, client.hlen(f"dramatiq:{queue}.msgs")


def main(numbers: int) -> None:
    with TemporaryPostgres() as postgres, tempfile.TemporaryDirectory() as directory:
        redis_server = EmbeddedRedis(Path(directory) / "redis").start()
        database_url = postgres.create_database("bench_broadcast")
        database = Database(database_url)
        Base.metadata.create_all(database.engine)
        account_id = seed(database, numbers)
        port = free_port()
        env = {**os.environ, "PYTHONPATH": str(ROOT), "DATABASE_URL": database_url, "REDIS_URL": redis_server.url,
               "PORT": str(port), "CREDITQ_ADMIN_KEY": ADMIN_KEY, "CREDITQ_DATA_DIR": str(Path(directory) / "data"),
               "CREDITQ_NEW_ACCOUNT_DAYS": "0"}
        processes = {"web": spawn(env, directory, "web"),
                     "worker": spawn(env, directory, "worker", "--processes", "2", "--threads", "4",
                                     "--queues", "broadcasts", "campaigns")}
        load = LoadAverage()
        load.start()
        url, headers = f"http://127.0.0.1:{port}", {"Authorization": f"Bearer {ADMIN_KEY}"}
        figures = {}
        try:
            wait_for(f"{url}/healthz")
            time.sleep(3)  # the worker processes import the actors
            client = redis.Redis.from_url(redis_server.url)
            runs = {
                "voice broadcast": ("calls", lambda: requests.post(f"{url}/v1/voice-broadcasts", headers=headers,
                                                                   timeout=600, json={
                    "name": "bench", "from": SENDER, "account_id": account_id, "say": "Open house Sunday at 2pm",
                    "machine_detection": True, "quiet_hours": NO_QUIET_HOURS,
                    "recipients": [{"to": f"+1212{200 + i // 10_000}{i % 10_000:04d}"} for i in range(numbers)]})),
                "text campaign": (bulk_queue_for(account_id), lambda: requests.post(f"{url}/v1/campaigns", headers=headers,
                                                                     timeout=600, json={
                    "name": "bench", "from": SENDER, "account_id": account_id, "quiet_hours": NO_QUIET_HOURS,
                    "body": "Hi {{ first_name }}, open house Sunday 2pm. Reply STOP to opt out.",
                    "csv": "to,first_name\n" + "".join(f"+1312{200 + i // 10_000}{i % 10_000:04d},Name{i}\n"
                                                       for i in range(numbers))})),
            }
            for name, (queue, post) in runs.items():
                meters = {process: PeakRss(processes[process].pid) for process in processes}
                for meter in meters.values():
                    meter.start()
                figures[name] = (*measure(client, queue, numbers, post),
                                 {process: meter.peak for process, meter in meters.items()})
                for meter in meters.values():
                    meter.running = False
        finally:
            load.running = False
            for process in processes.values():
                os.killpg(process.pid, signal.SIGTERM)
                process.wait(timeout=30)
            redis_server.stop()
            database.dispose()
    print(f"{numbers:,} numbers each, worker 2 processes x 4 threads, load average {load.peak:.1f} at most")
    for name, (accepted, enqueued, queued, peaks) in figures.items():
        print(f"  {name:16} accepted in {accepted:6.2f} s, {queued:,} jobs enqueued {enqueued:6.2f} s after the POST, "
              f"peak RSS web {peaks['web'] / 2**20:.0f} MB, worker {peaks['worker'] / 2**20:.0f} MB (summed)")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 10_000)
