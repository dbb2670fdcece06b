"""GET /v1/accounts/{id}/forecast for an account with 1,000,000 messages of history, on PostgreSQL.

The account's 90 days of texts (and one MMS in ten, each with a carrier fee) are written as the ledger writes
them (a `usage` entry per message, `carrier_fee` beside the MMS), COPYed in; the scheduler's fold
(shared.reporting.daily_usage.fold_new_entries) then folds them, and the figure of that fold is printed; a last
stretch of 200 messages (25 minutes of its traffic) is written after the fold, as a read between two folds meets
it. A `creditq web` is started as a user would (with the embedded Redis), and the account's key reads its forecast
one request after another; then its balance the same way, the floor any read of this web pays. Prints p50, p95
and max (the target is a forecast's p95 under 50 ms) and the load average; asserts nothing.

    PYTHONPATH=. .venv/bin/python bench/forecast.py [--messages 1000000] [--requests 300]
"""

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import psycopg  # noqa: E402
import requests  # noqa: E402

from bench.processes import percentile, spawn, wait_for  # noqa: E402
from shared.db import Database  # noqa: E402
from shared.embedded_redis import EmbeddedRedis  # noqa: E402
from shared.reporting import daily_usage  # noqa: E402
from tests.support.ports import free_port  # noqa: E402
from tests.support.postgres import TemporaryPostgres  # noqa: E402

ADMIN_KEY = "bench-operator-key-0123456789"
OPERATOR = {"Authorization": f"Bearer {ADMIN_KEY}"}
DAYS = 90
UNFOLDED = 200  # about 25 minutes of this account's entries: a fold job held up that long


def populate(url: str, account_id: str, messages: int, numbers: range) -> None:
    """Messages `numbers` of `messages` delivered texts spread over the last DAYS days, each with its entries."""
    now = datetime.now(UTC)
    start = now - timedelta(days=DAYS)
    step = (now - start) / messages
    message_columns = ", ".join(f'"{column}"' for column in (
        "id", "account_id", "direction", "to", "from", "body", "media_urls", "status", "segments", "encoding",
        "credits_estimated", "credits_charged", "attempts", "created_at", "updated_at"))
    entry_columns = "account_id, at, kind, amount, balance_after, reference, idempotency_key"
    with psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://")) as connection:
        with connection.cursor().copy(f"COPY messages ({message_columns}) FROM STDIN") as copy:
            for n in numbers:
                at, mms = start + step * n, n % 10 == 0
                copy.write_row((f"msg_bench_{n:08d}", account_id, "outbound", "+14155550100", "+14155550199", "hi",
                                '["https://example.com/a.png"]' if mms else None, "delivered", 1, "GSM-7",
                                3_000 if mms else 1_000, 3_000 if mms else 1_000, 1, at, at))
        with connection.cursor().copy(f"COPY entries ({entry_columns}) FROM STDIN") as copy:
            for n in numbers:
                at, mms = start + step * n, n % 10 == 0
                copy.write_row((account_id, at, "usage", -(3_000 if mms else 1_000), 0, f"msg_bench_{n:08d}",
                                f"message:msg_bench_{n:08d}:usage"))
                if mms:
                    copy.write_row((account_id, at, "carrier_fee", -5, 0, f"msg_bench_{n:08d}",
                                    f"message:msg_bench_{n:08d}:usage:carrier_fee"))
        connection.execute("UPDATE accounts SET created_at = %s WHERE id = %s AND created_at > %s",
                            (start, account_id, start))  # the account is as old as its history
        connection.execute("ANALYZE")


def fold(url: str) -> tuple[float, int]:
    """Fold every entry written, as the scheduler's job does, until two folds in a row find nothing new."""
    database = Database(url)
    started, folded, quiet = time.perf_counter(), 0, 0
    try:
        while quiet < 2:
            with database.unit_of_work() as session:
                read = daily_usage.fold_new_entries(session)
            folded += read
            quiet = quiet + 1 if read == 0 else 0
    finally:
        database.dispose()
    return time.perf_counter() - started, folded


def timed(url: str, headers: dict, count: int) -> tuple[list[float], dict]:
    """`count` GETs one after another: each one's latency, and the last answer."""
    latencies = []
    with requests.Session() as session:
        for _ in range(count):
            began = time.perf_counter()
            response = session.get(url, headers=headers, timeout=30)
            latencies.append(time.perf_counter() - began)
            response.raise_for_status()
    return latencies, response.json()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--requests", type=int, default=300)
    args = parser.parse_args()
    with TemporaryPostgres() as postgres, tempfile.TemporaryDirectory() as directory:
        redis_server = EmbeddedRedis(Path(directory) / "redis").start()
        url = postgres.create_database("bench_forecast")
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        env = {**os.environ, "PYTHONPATH": str(ROOT), "DATABASE_URL": url, "REDIS_URL": redis_server.url,
               "PORT": str(port), "CREDITQ_ADMIN_KEY": ADMIN_KEY, "CREDITQ_DATA_DIR": str(Path(directory) / "data")}
        subprocess.run([sys.executable, "-m", "creditq", "db", "upgrade"], env=env, cwd=ROOT, check=True,
                       capture_output=True)
        web = spawn(env, directory, "web")
        try:
            wait_for(f"{base}/healthz")
            created = requests.post(f"{base}/v1/accounts", headers=OPERATOR, timeout=10, json={
                "name": "Busy realty", "timezone": "America/Chicago"}).json()
            account_id, key = created["id"], created["api_key"]
            requests.post(f"{base}/v1/accounts/{account_id}/grants", headers=OPERATOR, timeout=10,
                          json={"credits": "150000", "kind": "purchase"}).raise_for_status()
            started = time.perf_counter()
            populate(url, account_id, args.messages, range(args.messages - UNFOLDED))
            populated = time.perf_counter() - started
            fold_seconds, folded = fold(url)
            populate(url, account_id, args.messages, range(args.messages - UNFOLDED, args.messages))  # after the fold
            headers = {"Authorization": f"Bearer {key}"}
            latencies, answer = timed(f"{base}/v1/accounts/{account_id}/forecast", headers, args.requests)
            floor, _ = timed(f"{base}/v1/accounts/{account_id}/balance", headers, args.requests)
        finally:
            os.killpg(web.pid, signal.SIGTERM)
            web.wait(timeout=30)
            redis_server.stop()
    print(f"history: {args.messages:,} messages over {DAYS} days (COPY {populated:.1f} s); "
          f"fold of {folded:,} entries {fold_seconds:.1f} s ({folded / fold_seconds:,.0f}/s), "
          f"{UNFOLDED:,} left for the read to add")
    for name, figures in (("GET /forecast", latencies), ("GET /balance, the same web's floor", floor)):
        print(f"{name} x {len(figures)}: p50 {percentile(figures, 0.5) * 1000:.1f} ms  "
              f"p95 {percentile(figures, 0.95) * 1000:.1f} ms  max {max(figures) * 1000:.1f} ms")
    print("target: GET /forecast p95 under 50 ms")
    print(f"runs_out_at {answer['runs_out_at']}, daily_rate {answer['daily_rate']}, confidence {answer['confidence']}")
    loads = " / ".join(f"{value:.1f}" for value in os.getloadavg())
    print(f"load average: {loads} (1/5/15 min), {os.cpu_count()} CPUs")


if __name__ == "__main__":
    main()
