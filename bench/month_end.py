"""Month-end for 100,000 accounts on PostgreSQL, the way production runs it: batches of accounts, each
batch one transaction through shared.billing.month_end.close_accounts, spread over worker processes. Prints wall
time, accounts/s and peak RSS (the Python processes together, and PostgreSQL's); asserts nothing.

    PYTHONPATH=. /work/venv/bin/python bench/month_end.py [--accounts 100000] [--processes 2] [--batch 500]

The data: accounts across four time zones; every account has a plan lot of the ended month (expires),
70% monthly plans, 20% fifo_12m rollover plans with an older rollover lot, 10% postpaid in debt (billed
through the simulated gateway); half own a phone number (monthly credits); every fifth has a user with
monthly credits (allocation). Every account has a daily usage of texts for each day since it was created (less on
weekends), so the month-end's plan advice and run-out forecasts (shared.billing.advice, .forecasts) have a
history to work on.
"""

import argparse
import multiprocessing
import os
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import psutil  # noqa: E402
import psycopg  # noqa: E402

from shared.billing import month_end  # noqa: E402
from shared.billing.calendar import Period, period_end  # noqa: E402
from shared.billing.payments import SimulatedGateway  # noqa: E402
from shared.db import Database  # noqa: E402
from shared.models import Base  # noqa: E402
from tests.support.postgres import TemporaryPostgres  # noqa: E402

PERIOD = Period(2026, 1)
ZONES = ("UTC", "Pacific/Auckland", "America/Los_Angeles", "Europe/Berlin")
NOW = datetime(2026, 2, 2, 12, tzinfo=UTC)  # January has ended in every zone
CREATED = datetime(2026, 1, 5, tzinfo=UTC)


def _copy(connection: psycopg.Connection, table: str, columns: tuple[str, ...], rows) -> None:
    with connection.cursor().copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
        for row in rows:
            copy.write_row(row)


def populate(url: str, accounts: int) -> None:
    conninfo = url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(conninfo) as connection:
        account_rows, lot_rows, user_rows, number_rows, card_rows = [], [], [], [], []
        lot_id = 0
        for i in range(accounts):
            account_id = f"acct_{i:08d}"
            tz = ZONES[i % len(ZONES)]
            postpaid, rollover = i % 10 == 9, i % 10 in (7, 8)
            monthly = 1_000_000 if not postpaid else 0
            ends = period_end(PERIOD, tz)
            lots = []
            if not postpaid:
                lots.append(("plan" if not rollover else "rollover", 400_000, 10 if not rollover else 20,
                             ends if not rollover else datetime(2026, 12, 1, tzinfo=UTC)))
            if rollover:
                lots.append(("rollover", 50_000, 20, ends))  # a year-old rollover lot expiring now
            balance = sum(lot[1] for lot in lots) - (25_000 if postpaid else 0)
            account_rows.append((account_id, "Bench", tz, monthly, "monthly", "fifo_12m" if rollover else "none",
                                 "postpaid" if postpaid else "prepaid", 0, 0, "active", False, False, False,
                                 balance, 0, 0, 0, CREATED, CREATED, CREATED))
            for kind, amount, priority, expires in lots:
                lot_id += 1
                lot_rows.append((lot_id, account_id, kind, amount, amount, priority, CREATED, expires))
            if i % 2 == 0:
                number_rows.append((account_id, f"+1415{i:07d}", "long_code", 1_000, CREATED))
            if i % 5 == 0:
                user_rows.append((f"user_{i:08d}", account_id, "Seat", f"u{i}@example.com", "user", 100_000, 0, 0,
                                  CREATED))
            if postpaid:
                card_rows.append((account_id, False, 0, 0, "pm_card_visa", 0, 0, CREATED))
        _copy(connection, "accounts", ("id", "name", "timezone", "plan_monthly_credits", "plan_cycle", "plan_rollover",
                                       "overdraft_policy", "overdraft_limit", "low_balance_threshold", "status",
                                       "credit_hold", "rollover_protection", "spam", "balance", "held", "allocated",
                                       "allocated_held", "created_at", "cycle_anchor_at", "updated_at"), account_rows)
        _copy(connection, "lots", ("id", "account_id", "kind", "amount", "remaining", "priority", "granted_at",
                                   "expires_at"), lot_rows)
        connection.execute("SELECT setval(pg_get_serial_sequence('lots', 'id'), %s)", (lot_id,))
        _copy(connection, "users", ("id", "account_id", "name", "email", "role", "monthly_credits", "balance", "held",
                                    "created_at"), user_rows)
        _copy(connection, "phone_numbers", ("account_id", "phone", "type", "monthly_cost", "created_at"), number_rows)
        _copy(connection, "auto_recharges", ("account_id", "enabled", "threshold", "credits", "payment_method",
                                             "attempts", "consecutive_failures", "updated_at"), card_rows)
        _copy(connection, "daily_usage", ("account_id", "day", "user_id", "kind", "millicredits", "count"),
              _daily_usage(accounts))
        connection.execute("ANALYZE")


def _daily_usage(accounts: int):
    """Texts every day from the accounts' creation to the end of the period, a tenth of it on weekends."""
    days = [CREATED.date() + timedelta(days=offset) for offset in range((NOW.date() - CREATED.date()).days)]
    for i in range(accounts):
        per_day = 5_000 + (i % 40) * 1_000
        for day in days:
            spent = per_day // 10 if day.weekday() >= 5 else per_day
            yield (f"acct_{i:08d}", day, "", "texts", spent, spent // 1_000)


_database: Database | None = None
_gateway = SimulatedGateway()


def _init_worker(url: str) -> None:
    global _database
    _database = Database(url, pool_size=2)


def _close_batch(batch: list[str]) -> month_end.Summary:
    summary = month_end.close_accounts(_database, batch, PERIOD, now=NOW)
    if summary.billed:
        summary.add(month_end.collect_batch(_database, _gateway, batch, now=NOW))
    return summary


class PeakRss:
    """Samples the summed RSS of this process and its children, and of the PostgreSQL server's processes,
    and the CPU seconds each side used (other sessions' load moves wall time; CPU time barely moves)."""

    def __init__(self, postgres_pids: list[int]):
        self.ours = self.postgres = 0
        self.postgres_pids = postgres_pids
        self._cpu: dict[str, dict[int, float]] = {"ours": {}, "postgres": {}}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        me = psutil.Process()
        while not self._stop.is_set():
            ours_tree = [me, *me.children(recursive=True)]
            postgres_tree = [p for pid in self.postgres_pids for p in _tree(pid)]
            ours = sum(_rss(p) for p in ours_tree)
            postgres = sum(_rss(p) for p in postgres_tree)
            self.ours, self.postgres = max(self.ours, ours), max(self.postgres, postgres)
            for side, tree in (("ours", ours_tree), ("postgres", postgres_tree)):
                for process in tree:
                    self._cpu[side][process.pid] = _cpu(process, self._cpu[side].get(process.pid, 0.0))
            self._stop.wait(0.25)  # walking the process tree is not free: a few samples a second

    def cpu_seconds(self, side: str) -> float:
        """CPU used by that side's processes during the run (each process's last sample less its first)."""
        return sum(cpu - self._baseline.get(pid, 0.0) for pid, cpu in self._cpu[side].items())

    def __enter__(self) -> "PeakRss":
        me = psutil.Process()
        self._baseline = {p.pid: _cpu(p, 0.0) for p in [me, *[p for pid in self.postgres_pids for p in _tree(pid)]]}
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def _rss(process: psutil.Process) -> int:
    try:
        return process.memory_info().rss
    except psutil.Error:
        return 0


def _cpu(process: psutil.Process, last: float) -> float:
    try:
        times = process.cpu_times()
        return times.user + times.system
    except psutil.Error:
        return last


def _tree(pid: int) -> list[psutil.Process]:
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.Error:
        return []


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--accounts", type=int, default=100_000)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--batch", type=int, default=500)
    args = parser.parse_args()
    with TemporaryPostgres() as server:
        url = server.create_database("bench_month_end")
        database = Database(url)
        Base.metadata.create_all(database.engine)
        started = time.perf_counter()
        populate(url, args.accounts)
        populate_seconds = time.perf_counter() - started
        postgres_pids = [server.postmaster_pid]
        total = month_end.Summary(str(PERIOD))
        context = multiprocessing.get_context("fork")
        with PeakRss(postgres_pids) as peak:
            started = time.perf_counter()
            with context.Pool(args.processes, initializer=_init_worker, initargs=(url,)) as pool:
                for done in pool.imap_unordered(_close_batch, month_end.account_batches(database, args.batch)):
                    total.add(done)
            wall = time.perf_counter() - started
        again = time.perf_counter()
        repeat = month_end.close_accounts(database, [f"acct_{i:08d}" for i in range(min(args.accounts, 1000))],
                                          PERIOD, now=NOW)
        again = time.perf_counter() - again
        database.dispose()

    mb = 1024 * 1024
    rows = [
        ("accounts", f"{args.accounts:,}"),
        ("worker processes x batch", f"{args.processes} x {args.batch}"),
        ("populate (COPY)", f"{populate_seconds:.1f} s"),
        ("month-end wall time", f"{wall:.1f} s"),
        ("accounts/s", f"{total.closed / wall:,.0f}"),
        ("peak RSS, Python processes (sum)", f"{peak.ours / mb:,.0f} MB"),
        ("peak RSS, PostgreSQL (sum)", f"{peak.postgres / mb:,.0f} MB"),
        ("CPU seconds, Python / PostgreSQL", f"{peak.cpu_seconds('ours'):.1f} / {peak.cpu_seconds('postgres'):.1f}"),
        ("load average (1, 5, 15 min) at the end", ", ".join(f"{load:.2f}" for load in os.getloadavg())),
        ("closed / failed", f"{total.closed:,} / {len(total.failed)}"),
        ("credits expired", f"{total.expired // 1000:,}"),
        ("credits billed / payments", f"{total.billed // 1000:,} / {total.payments_succeeded:,}"),
        ("number credits charged", f"{total.number_fees // 1000:,}"),
        ("credits granted", f"{total.granted // 1000:,}"),
        ("credits allocated", f"{total.allocated // 1000:,}"),
        ("advised a cheaper plan / saving", f"{total.advised:,} / {total.advice_saving_cents // 100:,} USD"),
        ("forecast to run out before next month-end", f"{total.running_out:,}"),
        ("second run of 1,000 accounts", f"{repeat.already_closed} already closed, {again:.2f} s"),
    ]
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value}")


if __name__ == "__main__":
    main()
