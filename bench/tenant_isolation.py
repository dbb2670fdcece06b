"""One tenant's 10 MB do-not-contact import against another tenant's reads, on SQLite and on PostgreSQL.

For each database a fresh `creditq web` is started (with the embedded Redis; PostgreSQL from
tests.support.postgres). Tenant A posts a do-not-contact CSV of about 10 MB (`phone,name` rows of valid
US numbers) to POST /v1/opt-outs/import while tenant B polls GET /v1/accounts/{B}/balance with its own
key, one request after another, and /healthz is polled beside it. Prints, per database, the import's
duration, the other tenant's read latencies (p50, p99, max) and failures, the same reads with nothing
else running as a baseline, and the load average. The target is every read under 1 s. Prints figures
only; nothing here passes or fails.

    PYTHONPATH=. .venv/bin/python bench/tenant_isolation.py [--megabytes 10] [--databases sqlite,postgres]
"""

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import requests  # noqa: E402

from bench.processes import LoadAverage, percentile, spawn, wait_for  # noqa: E402
from shared.embedded_redis import EmbeddedRedis  # noqa: E402
from tests.support.ports import free_port  # noqa: E402
from tests.support.postgres import TemporaryPostgres  # noqa: E402

ADMIN_KEY = "bench-operator-key-0123456789"
OPERATOR = {"Authorization": f"Bearer {ADMIN_KEY}"}
BASELINE_SECONDS = 5


class Poller(threading.Thread):
    """GETs `url` one request after another until stopped; keeps each latency and each failure."""

    def __init__(self, url: str, headers: dict):
        super().__init__(daemon=True)
        self.url, self.headers = url, headers
        self.latencies: list[float] = []
        self.failures: list[str] = []
        self.running = True

    def run(self) -> None:
        with requests.Session() as session:
            while self.running:
                started = time.monotonic()
                try:
                    response = session.get(self.url, headers=self.headers, timeout=60)
                    if response.status_code != 200:
                        self.failures.append(f"{response.status_code} {response.text[:120]}")
                except requests.RequestException as error:
                    self.failures.append(repr(error)[:120])
                self.latencies.append(time.monotonic() - started)
                time.sleep(0.01)

    def stop(self) -> "Poller":
        self.running = False
        self.join()
        return self


def do_not_contact_csv(megabytes: float) -> bytes:
    """`phone,name` rows of valid US numbers (New York exchanges 200-999) until the text is `megabytes` MB."""
    rows, size, index = ["phone,name\n"], 11, 0
    while size < megabytes * 1_000_000:
        row = f"+1212{200 + index // 10_000}{index % 10_000:04d},Contact number {index:07d} of the list\n"
        rows.append(row)
        size += len(row)
        index += 1
    return "".join(rows).encode()


def run(database: str, csv_body: bytes, postgres) -> dict:
    with tempfile.TemporaryDirectory() as directory:
        redis_server = EmbeddedRedis(Path(directory) / "redis").start()
        database_url = (postgres.create_database("bench_isolation") if database == "postgres"
                        else f"sqlite:///{directory}/creditq.db")
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        env = {**os.environ, "PYTHONPATH": str(ROOT), "DATABASE_URL": database_url, "REDIS_URL": redis_server.url,
               "PORT": str(port), "CREDITQ_ADMIN_KEY": ADMIN_KEY, "CREDITQ_DATA_DIR": str(Path(directory) / "data")}
        subprocess.run([sys.executable, "-m", "creditq", "db", "upgrade"], env=env, cwd=ROOT, check=True,
                       capture_output=True)
        web = spawn(env, directory, "web")
        try:
            wait_for(f"{url}/healthz")
            importer = account(url, "Importing realty")
            reader, reader_key = account(url, "Reading church", key=True)
            requests.post(f"{url}/v1/accounts/{reader}/grants", headers=OPERATOR, timeout=10,
                          json={"credits": "500", "kind": "purchase"}).raise_for_status()
            balance_url, reader_headers = f"{url}/v1/accounts/{reader}/balance", {"Authorization": f"Bearer {reader_key}"}

            baseline = Poller(balance_url, reader_headers)
            baseline.start()
            time.sleep(BASELINE_SECONDS)
            baseline.stop()

            load = LoadAverage()
            load.start()
            reads, health = Poller(balance_url, reader_headers), Poller(f"{url}/healthz", {})
            reads.start()
            health.start()
            started = time.monotonic()
            response = requests.post(f"{url}/v1/opt-outs/import?account_id={importer}", data=csv_body, timeout=900,
                                     headers={**OPERATOR, "Content-Type": "text/csv"})
            imported = time.monotonic() - started
            reads.stop()
            health.stop()
            load.running = False
            load.join()
            response.raise_for_status()
            answer = response.json()
        finally:
            os.killpg(web.pid, signal.SIGTERM)
            web.wait(timeout=30)
            redis_server.stop()
    return {"database": database, "import_seconds": imported, "added": answer["added"],
            "invalid": answer["invalid_count"], "reads": reads, "health": health, "baseline": baseline,
            "load_peak": load.peak, "load_end": os.getloadavg()}


def account(url: str, name: str, *, key: bool = False):
    response = requests.post(f"{url}/v1/accounts", headers=OPERATOR, json={"name": name}, timeout=10)
    response.raise_for_status()
    return (response.json()["id"], response.json()["api_key"]) if key else response.json()["id"]


def describe(poller: Poller) -> str:
    latencies = poller.latencies
    over = sum(latency >= 1 for latency in latencies)
    return (f"{len(latencies):6,} reads  p50 {percentile(latencies, 0.5) * 1000:7.1f} ms  "
            f"p99 {percentile(latencies, 0.99) * 1000:7.1f} ms  max {max(latencies, default=0) * 1000:7.1f} ms  "
            f"{over} at or over 1 s  {len(poller.failures)} failed"
            + (f" (first: {poller.failures[0]})" if poller.failures else ""))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--megabytes", type=float, default=10)
    parser.add_argument("--databases", default="sqlite,postgres")
    args = parser.parse_args()
    csv_body = do_not_contact_csv(args.megabytes)
    databases = args.databases.split(",")
    with TemporaryPostgres() if "postgres" in databases else contextlib.nullcontext() as postgres:
        results = [run(database, csv_body, postgres) for database in databases]
    rows = csv_body.count(b"\n") - 1
    print(f"do-not-contact import of {len(csv_body) / 1e6:.1f} MB ({rows:,} rows) by one tenant; "
          f"another tenant reads its balance meanwhile; {os.cpu_count()} CPUs")
    for result in results:
        print(f"\n{result['database']}: import answered in {result['import_seconds']:.1f} s, "
              f"{result['added']:,} added, {result['invalid']:,} invalid")
        print(f"  other tenant's GET balance during the import: {describe(result['reads'])}")
        print(f"  GET /healthz during the import:               {describe(result['health'])}")
        print(f"  other tenant's GET balance, nothing else:     {describe(result['baseline'])}")
        print(f"  load average: peak {result['load_peak']:.1f} during the import; "
              f"{' / '.join(f'{value:.1f}' for value in result['load_end'])} (1/5/15 min) after it")


if __name__ == "__main__":
    main()
