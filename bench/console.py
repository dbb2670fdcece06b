"""The console's dashboard and transactions pages for a large account: p50 and p95 time of each page.

A fresh `creditq web` on PostgreSQL (tests.support.postgres) and the embedded Redis; one account with a user,
1,000,000 messages (sent and received, over 90 days) and 100,000 ledger entries (texts and carrier fees charged
for them), written with set-wise SQL, then folded into daily usage as the scheduler's minute job does. A browser-like
client signs in to the console with the owner's key and GETs each page one after another: the dashboard (30-day
and 90-day chart) and the transactions page (unfiltered, and filtered by kind and dates). The target is a p95 under
200 ms on this machine. Prints figures only; nothing here passes or fails.

    PYTHONPATH=. .venv/bin/python bench/console.py [--messages 1000000] [--entries 100000] [--requests 200]
"""

import argparse
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import requests  # noqa: E402
from sqlalchemy import func, select, text  # noqa: E402

from bench.processes import LoadAverage, percentile, spawn, wait_for  # noqa: E402
from shared.db import Database  # noqa: E402
from shared.embedded_redis import EmbeddedRedis  # noqa: E402
from shared.models import Entry, UsageFold  # noqa: E402
from shared.reporting.daily_usage import fold_new_entries  # noqa: E402
from tests.support.ports import free_port  # noqa: E402
from tests.support.postgres import TemporaryPostgres  # noqa: E402

ADMIN_KEY = "bench-operator-key-0123456789"
OPERATOR = {"Authorization": f"Bearer {ADMIN_KEY}"}
SECRET_KEY = "3Ixpz7tWvY2bqJw3GsWk0M9cB2f5pVh8lQeTjR1nXoA="
SPAN = timedelta(days=90)
WARM_UP = 10


def seed(database: Database, account_id: str, user_id: str, messages: int, entries: int) -> None:
    """Messages newest first in id order too; each of the newest `entries // 2` has a usage and a carrier-fee entry."""
    step = SPAN.total_seconds() / messages
    with database.unit_of_work() as session:
        session.execute(text("""
            INSERT INTO messages (id, account_id, user_id, direction, "to", "from", body, status, segments, encoding,
                                  credits_estimated, credits_charged, attempts, created_at, updated_at)
            SELECT 'msg_bench_' || lpad(g::text, 8, '0'), :account, CASE WHEN g % 5 = 0 THEN :user END,
                   CASE WHEN g % 20 = 0 THEN 'inbound' ELSE 'outbound' END,
                   '+1415555' || lpad((g % 10000)::text, 4, '0'), '+14155550000', 'Open house Sunday, text ' || g,
                   CASE WHEN g % 20 = 0 THEN 'received' ELSE 'delivered' END, 1, 'GSM-7', 1000, 1000, 1,
                   now() - g * make_interval(secs => :step), now() - g * make_interval(secs => :step)
            FROM generate_series(1, :messages) AS g"""),
            {"account": account_id, "user": user_id, "messages": messages, "step": step})
        session.execute(text("""
            INSERT INTO entries (account_id, user_id, at, kind, amount, balance_after, reference, idempotency_key)
            SELECT :account, CASE WHEN m % 5 = 0 THEN :user END, now() - m * make_interval(secs => :step),
                   CASE WHEN e % 2 = 0 THEN 'usage' ELSE 'carrier_fee' END, CASE WHEN e % 2 = 0 THEN -1000 ELSE -3 END,
                   100000000 - e * 500, 'msg_bench_' || lpad(m::text, 8, '0'), 'bench:' || e
            FROM generate_series(:entries, 1, -1) AS e, LATERAL (SELECT (e + 1) / 2 AS m) AS message
            ORDER BY e DESC"""),
            {"account": account_id, "user": user_id, "entries": entries, "step": step})
    with database.engine.connect() as connection:
        connection.execution_options(isolation_level="AUTOCOMMIT").execute(text("ANALYZE"))


def fold_all(database: Database) -> None:
    """Fold every entry into daily usage, as the scheduler's job does a minute at a time."""
    for _ in range(200):
        with database.unit_of_work() as session:
            fold_new_entries(session)
        with database.read_only() as session:
            folded = session.scalar(select(UsageFold.folded_through))
            newest = session.scalar(select(func.max(Entry.id)))
        if folded is not None and folded >= newest:
            return
        time.sleep(0.05)
    raise RuntimeError("the entries were not all folded")


def signed_in(url: str, key: str) -> requests.Session:
    client = requests.Session()
    form = client.get(f"{url}/sign-in", timeout=30).text
    token = re.search(r'name="csrf_token" value="([^"]+)"', form).group(1)
    client.post(f"{url}/sign-in", data={"key": key, "csrf_token": token}, timeout=30).raise_for_status()
    return client


def timings(client: requests.Session, url: str, count: int) -> list[float]:
    for _ in range(WARM_UP):
        client.get(url, timeout=60).raise_for_status()
    seconds = []
    for _ in range(count):
        started = time.perf_counter()
        response = client.get(url, timeout=60)
        seconds.append(time.perf_counter() - started)
        response.raise_for_status()
        if "Sign in" in response.text[:2000] and "/sign-in" in response.url:
            raise RuntimeError(f"{url} answered the sign-in form")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--entries", type=int, default=100_000)
    parser.add_argument("--requests", type=int, default=200)
    args = parser.parse_args()
    with TemporaryPostgres() as postgres, tempfile.TemporaryDirectory() as directory:
        redis_server = EmbeddedRedis(Path(directory) / "redis").start()
        database_url = postgres.create_database("bench_console")
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        env = {**os.environ, "PYTHONPATH": str(ROOT), "DATABASE_URL": database_url, "REDIS_URL": redis_server.url,
               "PORT": str(port), "CREDITQ_ADMIN_KEY": ADMIN_KEY, "CREDITQ_SECRET_KEY": SECRET_KEY,
               "CREDITQ_DATA_DIR": str(Path(directory) / "data"), "CREDITQ_KEY_RATE_LIMIT": "0",
               "PAYMENT_GATEWAY": "simulated", "CREDITQ_ENV": "development"}
        subprocess.run([sys.executable, "-m", "creditq", "db", "upgrade"], env=env, cwd=ROOT, check=True,
                       capture_output=True)
        web = spawn(env, directory, "web")
        database = Database(database_url, pool_size=2)
        try:
            wait_for(f"{url}/healthz")
            created = requests.post(f"{url}/v1/accounts", headers=OPERATOR, timeout=30, json={
                "name": "Big Realty", "timezone": "America/Chicago",
                "plan": {"monthly_credits": "100000", "cycle": "monthly", "rollover": "none"}})
            created.raise_for_status()
            account_id, key = created.json()["id"], created.json()["api_key"]
            user = requests.post(f"{url}/v1/accounts/{account_id}/users", timeout=30, json={
                "name": "Agent", "email": "agent@example.com", "role": "user", "monthly_credits": "0"},
                headers={"Authorization": f"Bearer {key}"})
            user.raise_for_status()
            started = time.monotonic()
            seed(database, account_id, user.json()["id"], args.messages, args.entries)
            fold_all(database)
            print(f"seeded {args.messages:,} messages and {args.entries:,} entries and folded them in "
                  f"{time.monotonic() - started:.0f} s")
            client = signed_in(url, key)
            today = datetime.now(UTC).date()
            pages = {
                "dashboard (30 days)": f"{url}/accounts/{account_id}",
                "dashboard (90 days)": f"{url}/accounts/{account_id}?days=90",
                "transactions": f"{url}/accounts/{account_id}/transactions",
                "transactions (usage, last 7 days)": f"{url}/accounts/{account_id}/transactions?kind=usage"
                                                     f"&from={today - timedelta(days=7)}&to={today}",
                "messages": f"{url}/accounts/{account_id}/messages",
            }
            load = LoadAverage()
            load.start()
            results = {name: timings(client, page, args.requests) for name, page in pages.items()}
            load.running = False
            load.join()
        finally:
            database.dispose()
            os.killpg(web.pid, signal.SIGTERM)
            web.wait(timeout=30)
            redis_server.stop()
    print(f"console pages, {args.requests} sequential GETs each after {WARM_UP} warm-up ones, one web process, "
          f"{os.cpu_count()} CPUs; load average peak {load.peak:.1f}")
    for name, seconds in results.items():
        print(f"  {name:36} p50 {percentile(seconds, 0.5) * 1000:6.1f} ms  p95 {percentile(seconds, 0.95) * 1000:6.1f} ms"
              f"  max {max(seconds) * 1000:6.1f} ms")


if __name__ == "__main__":
    main()
