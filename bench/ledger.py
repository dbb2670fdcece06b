"""Ledger throughput on PostgreSQL: reserve+settle pairs per second beside the raw conditional UPDATE ceiling.

    python bench/ledger.py [--threads 8] [--seconds 5] [--accounts 1000] [--batch 5] [--statements 3000] [--durable]

Starts its own throw-away PostgreSQL (tests.support.postgres), creates the schema, then measures with
N threads, each on its own connection, the same one for both (autocommit, as `Database.one_statement()` gives a
lone ledger call):
  raw UPDATE   `UPDATE accounts SET held = held + 1 WHERE id = ? AND status = 'active'
               AND <pool available> - 1 >= -overdraft_limit` (the reserve's WHERE shape): the ceiling;
  ledger       reserve (one transaction) then settle (another), each a lone call on that connection, counted in
               pairs;
  settled N at once
               the same, as the pipeline runs them: N reserves, each a lone call (a send job's claim), then their
               N settlements in one statement (book.settle_many), as a batch of status callbacks settles its
               messages (--batch, 5 by default: what the pipeline bench's callback batches averaged);
  claimed N at once
               the same N as a worker process's group-committed claims make them: their N reserves in one call
               (book.reserve_each), then their N settlements in one (book.settle_many);
  bare pair    two lone calls of PL/pgSQL functions that make only the writes any ledger of holds and entries
               makes: the hold inserted and the account's held raised (conditioned as the reserve's); the hold
               settled, the account charged and a usage entry inserted. No replay, lots, wallets, expiry or
               outcomes: what a ledger of this shape could reach at most;
  at send      one lone call of a PL/pgSQL function that charges a send's estimate at once: the replay check on
               the entry's key, the account's balance lowered (conditioned as the reserve's, with its expiry gate),
               the pool's lots burnt in FIFO order as ledger_settle burns them and a usage entry inserted. A ledger
               of that other shape holds nothing and writes nothing more when the send's cost turns out as
               estimated, so one call stands for its pair (no wallets: the pool's credits only);
  empty pair   the ledger's two calls, the same statements and arguments, of two PL/pgSQL functions with its
               signatures that do nothing (they answer 'held' and 'settled'): what two lone calls could reach at
               most, whatever they did.
Each on one hot account, then spread over --accounts accounts. Beside each rate, the CPU an operation took in this
process (its threads: Python, SQLAlchemy, psycopg) and in PostgreSQL (the postmaster and its backends), so a ratio
can be read as where the time went. No assertions: figures only. On
PostgreSQL reserve and settle are one call each of the functions in shared/ledger/plpgsql.py. The machine
may be shared: the seven take turns in one-second slices (--seconds of each in all), so a change in
the load hits each alike; the load average is printed before and after, compare ratios from one run only.
The server runs as the test suite's does, with fsync, synchronous_commit and full_page_writes off, so every figure
is CPU; --durable turns them on (PostgreSQL's defaults, as production runs it), so every COMMIT waits for its WAL
flush to this machine's disk and a hot account's row stays locked meanwhile.
With --statements N, also PostgreSQL's own time per call of each function (pg_stat_statements) over N pairs
from one thread across the accounts, where no call waits on another's lock: the server's work alone.
"""

import argparse
import os
import random
import shlex
import sys
import threading
import time
from datetime import datetime, timezone
from functools import partial
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import Connection, text  # noqa: E402

from bench.processes import cpu_seconds, own_cpu_seconds  # noqa: E402
from shared.db import Database, prepared  # noqa: E402
from shared.ledger import accounts, book, plpgsql  # noqa: E402
from shared.models import Base  # noqa: E402
from tests.support.postgres import STATEMENT_STATISTICS, TemporaryPostgres  # noqa: E402

NOW = datetime(2021, 3, 1, tzinfo=timezone.utc)
RAW_UPDATE = text(
    "UPDATE accounts SET held = held + 1 WHERE id = :id AND status = 'active'"
    " AND (overdraft_policy = 'postpaid' OR (balance - allocated) - (held - allocated_held) - 1 >= -overdraft_limit)"
)

DURABLE = {"fsync": "on", "synchronous_commit": "on", "full_page_writes": "on"}  # PostgreSQL's defaults

# ledger_reserve's and ledger_settle's signatures and answers, with nothing done between
EMPTY_FUNCTIONS = (
    "CREATE FUNCTION empty_reserve(text, text, bigint, text, text, timestamptz, timestamptz, boolean,"
    " OUT outcome text, OUT hold holds) LANGUAGE plpgsql VOLATILE AS $$ BEGIN outcome := 'held'; END $$",
    "CREATE FUNCTION empty_settle(bigint, text, bigint, bigint, text, text, timestamptz, text, boolean,"
    " OUT outcome text, OUT hold holds, OUT new_balance bigint, OUT account_status text,"
    " OUT next_expiry_at timestamptz) LANGUAGE plpgsql VOLATILE AS $$ BEGIN outcome := 'settled'; END $$",
)
EMPTY_RESERVE = plpgsql.RESERVE.replace("ledger_reserve", "empty_reserve")
EMPTY_SETTLE = plpgsql.SETTLE.replace("ledger_settle", "empty_settle")
# the writes any ledger of holds and entries makes, and nothing else: no replay, lots, wallets, expiry or outcomes
BARE_FUNCTIONS = (
    "CREATE FUNCTION bare_reserve(p_account_id text, p_amount bigint, p_key text, p_now timestamptz,"
    " p_expires_at timestamptz) RETURNS bigint LANGUAGE plpgsql VOLATILE AS $$ DECLARE v_hold_id bigint; BEGIN"
    " INSERT INTO holds (account_id, amount, from_allocation, status, reference, idempotency_key, created_at,"
    " expires_at) VALUES (p_account_id, p_amount, false, 'pending', p_key, p_key, p_now, p_expires_at)"
    " RETURNING id INTO v_hold_id;"
    " UPDATE accounts a SET held = a.held + p_amount WHERE a.id = p_account_id AND a.status = 'active'"
    " AND (a.balance - a.allocated) - (a.held - a.allocated_held) - p_amount >= -a.overdraft_limit;"
    " RETURN v_hold_id; END $$",
    "CREATE FUNCTION bare_settle(p_hold_id bigint, p_actual bigint, p_key text, p_now timestamptz)"
    " RETURNS bigint LANGUAGE plpgsql VOLATILE AS $$"
    " DECLARE v_account_id text; v_amount bigint; v_balance bigint; BEGIN"
    " UPDATE holds h SET status = 'settled', resolved_at = p_now, settled_amount = p_actual"
    " WHERE h.id = p_hold_id AND h.status = 'pending' RETURNING h.account_id, h.amount INTO v_account_id, v_amount;"
    " UPDATE accounts a SET held = a.held - v_amount, balance = a.balance - p_actual WHERE a.id = v_account_id"
    " RETURNING a.balance INTO v_balance;"
    " INSERT INTO entries (account_id, at, kind, amount, balance_after, reference, hold_id, idempotency_key)"
    " VALUES (v_account_id, p_now, 'usage', -p_actual, v_balance, p_key, p_hold_id, p_key || '-settle');"
    " RETURN v_balance; END $$",
)
# a ledger of another shape: the estimate charged at the send, no hold; nothing more to write when it was right.
# With the ledger's own replay (the entry's key), expiry gate and FIFO lot burn (ledger_settle's statement, the pool's
# lots), so that what it reaches is what such a ledger could, not a lower bound.
CHARGE_AT_SEND_FUNCTION = """
CREATE FUNCTION charge_at_send(p_account_id text, p_amount bigint, p_key text, p_now timestamptz)
RETURNS bigint LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    v_balance bigint;
BEGIN
    PERFORM 1 FROM entries e WHERE e.idempotency_key = p_key;
    IF FOUND THEN
        RETURN NULL;  -- a replay: charged already
    END IF;
    UPDATE accounts a SET balance = a.balance - p_amount, updated_at = now()
     WHERE a.id = p_account_id AND a.status = 'active'
       AND (a.next_expiry_at IS NULL OR a.next_expiry_at > p_now)
       AND (a.overdraft_policy = 'postpaid'
            OR (a.balance - a.allocated) - (a.held - a.allocated_held) - p_amount >= -a.overdraft_limit)
    RETURNING a.balance INTO v_balance;
    IF NOT FOUND THEN
        RETURN NULL;  -- refused, or an expiry to write first
    END IF;
    UPDATE lots SET remaining = CASE WHEN o.running <= p_amount THEN 0 ELSE o.running - p_amount END
      FROM (SELECT l.id, l.remaining,
                   sum(l.remaining) OVER (ORDER BY l.priority, CASE WHEN l.expires_at IS NULL THEN 1 ELSE 0 END,
                                                   l.expires_at, l.granted_at, l.id) AS running
              FROM lots l
             WHERE l.account_id = p_account_id AND l.remaining > 0 AND l.user_id IS NULL) o
     WHERE lots.id = o.id AND o.running - o.remaining < p_amount;
    INSERT INTO entries (account_id, at, kind, amount, balance_after, reference, idempotency_key)
    VALUES (p_account_id, p_now, 'usage', -p_amount, v_balance, p_key, p_key);
    RETURN v_balance;
END
$$
"""


def open_accounts(database: Database, count: int) -> list[str]:
    ids = []
    with database.unit_of_work() as session:
        for index in range(count):
            account, _ = accounts.create_account(
                session, name=f"bench {index}", timezone="UTC", plan_monthly_credits=0, plan_cycle="monthly",
                plan_rollover="none", overdraft=accounts.Overdraft("prepaid"), low_balance_threshold=0, now=NOW)
            book.grant(session, account.id, 10**12, "purchase", granted_at=NOW, idempotency_key=f"seed-{account.id}")
            ids.append(account.id)
    return ids


def run_threads(threads: int, seconds: float, work) -> float:
    """Run `work(thread_index, counter_index)` in a loop on each thread for `seconds`; operations per second, where
    each call of `work` made as many as it answers if it answers an int, else one."""
    counts = [0] * threads
    stop = threading.Event()
    start = threading.Barrier(threads + 1)

    def loop(index: int) -> None:
        start.wait()
        while not stop.is_set():
            done = work(index, counts[index])
            counts[index] += 1 if done is None else done

    workers = [threading.Thread(target=loop, args=(index,)) for index in range(threads)]
    for worker in workers:
        worker.start()
    start.wait()
    began = time.perf_counter()
    time.sleep(seconds)
    stop.set()
    for worker in workers:
        worker.join()
    return sum(counts) / (time.perf_counter() - began)


def raw_rate(connections: list[Connection], account_ids: list[str], seconds: float) -> float:
    def update(index: int, _n: int) -> None:
        connections[index].execute(RAW_UPDATE, {"id": random.choice(account_ids)})

    return run_threads(len(connections), seconds, update)


def ledger_pair(connection: Connection, account_ids: list[str], key: str) -> None:
    """A reserve, then its settle, each a lone call (its own transaction)."""
    hold = book.reserve(connection, random.choice(account_ids), 1_000, reference=key, idempotency_key=key,
                        ttl_seconds=900, now=NOW)
    book.settle(connection, hold.id, 900, idempotency_key=f"{key}-settle", now=NOW)


def settled_in_batches(connection: Connection, account_ids: list[str], key: str, *, batch: int) -> int:
    """A status callbacks' group commit's shape: `batch` reserves, each a lone call (as send jobs claim), then their
    settlements in one batch (book.settle_many, one statement), as a batch of callbacks settles its messages: in
    the accounts' order, as the callbacks' batch locks them, so two batches never wait on each other in a ring."""
    holds = [book.reserve(connection, random.choice(account_ids), 1_000, reference=f"{key}.{n}",
                          idempotency_key=f"{key}.{n}", ttl_seconds=900, now=NOW) for n in range(batch)]
    holds.sort(key=lambda hold: (hold.account_id, hold.id))
    book.settle_many(connection, [book.SettleRequest(hold.id, 900, idempotency_key=f"{key}.{n}-settle")
                                  for n, hold in enumerate(holds)], now=NOW)
    return batch


def claimed_in_batches(connection: Connection, account_ids: list[str], key: str, *, batch: int) -> int:
    """`batch` reserves in one call, as a worker's send threads claim together (book.reserve_each), then their
    settlements in one batch (book.settle_many), in the accounts' order."""
    holds = book.reserve_each(connection, [book.Reservation(random.choice(account_ids), 1_000, f"{key}:{n}", 900,
                                                            reference=f"{key}:{n}") for n in range(batch)], now=NOW)
    holds.sort(key=lambda hold: (hold.account_id, hold.id))
    book.settle_many(connection, [book.SettleRequest(hold.id, 900, idempotency_key=f"{key}:{n}-settle")
                                  for n, hold in enumerate(holds)], now=NOW)
    return batch


def empty_pair(connection: Connection, account_ids: list[str], key: str) -> None:
    """`ledger_pair`'s two lone calls, each with the arguments the ledger's would take, of functions that do
    nothing."""
    account_id = random.choice(account_ids)
    with prepared(connection, EMPTY_RESERVE, (account_id, None, 1_000, key, key, NOW, NOW, True)) as call:
        call.fetchone()
    with prepared(connection, EMPTY_SETTLE, (None, key, 900, 0, key, f"{key}-settle", NOW, "negative", True)) as call:
        call.fetchone()


def bare_pair(connection: Connection, account_ids: list[str], key: str) -> None:
    """A reserve and its settle that only write: the hold inserted and the account's held raised; the hold settled,
    the account charged and the usage entry inserted."""
    key = f"bare-{key}"
    with prepared(connection, "SELECT bare_reserve(%s, %s, %s, %s, %s)",
                  (random.choice(account_ids), 1_000, key, NOW, NOW)) as call:
        hold_id = call.fetchone()[0]
    with prepared(connection, "SELECT bare_settle(%s, %s, %s, %s)", (hold_id, 900, key, NOW)) as call:
        call.fetchone()


def charge_at_send(connection: Connection, account_ids: list[str], key: str) -> None:
    """A send's estimate charged in one lone call: the account's balance and a usage entry; no hold, no settle."""
    with prepared(connection, "SELECT charge_at_send(%s, %s, %s, %s)",
                  (random.choice(account_ids), 900, f"send-{key}", NOW)) as call:
        call.fetchone()


def contenders(batch: int) -> tuple:
    """What takes turns with the raw UPDATE, each counted in pairs (at send: one call stands for its pair)."""
    return (("ledger", ledger_pair), (f"settled {batch} at once", partial(settled_in_batches, batch=batch)),
            (f"claimed {batch} at once", partial(claimed_in_batches, batch=batch)),
            ("bare pair", bare_pair), ("at send", charge_at_send), ("empty pair", empty_pair))


def pair_rate(pair, connections: list[Connection], account_ids: list[str], seconds: float, label: str) -> float:
    return run_threads(len(connections), seconds,
                       lambda index, n: pair(connections[index], account_ids, f"{label}-{index}-{n}"))


def server_time_per_call(connection: Connection, account_ids: list[str], pairs: int) -> list[tuple[str, float]]:
    """(function, microseconds of PostgreSQL execution per call) over `pairs` reserve+settle pairs, one thread, on
    `connection` (autocommit)."""
    connection.execute(text("CREATE EXTENSION IF NOT EXISTS pg_stat_statements"))
    connection.execute(text("SELECT pg_stat_statements_reset()"))
    for n in range(pairs):
        ledger_pair(connection, account_ids, f"statements-{n}")
    rows = connection.execute(text(
        "SELECT substring(query from 'ledger_[a-z]+'), total_exec_time * 1000 / calls FROM pg_stat_statements"
        " WHERE query ~ '(FROM|LATERAL) ledger_(reserve|settle)\\(' ORDER BY 1")).all()
    return [tuple(row) for row in rows]


class Spent:
    """Operations and the CPU they took, in this process and in PostgreSQL, over the slices measured."""

    def __init__(self, postmaster: int):
        self.postmaster = postmaster
        self.operations = self.client = self.server = 0.0

    def measure(self, rate_of) -> float:
        """Run `rate_of()`, which answers the operations a second it ran, counting them and their CPU; its rate."""
        client, server, began = own_cpu_seconds(), cpu_seconds(self.postmaster), time.perf_counter()
        rate = rate_of()
        self.operations += rate * (time.perf_counter() - began)
        self.client += own_cpu_seconds() - client
        self.server += cpu_seconds(self.postmaster) - server
        return rate

    def per_operation(self) -> str:
        """Microseconds of CPU an operation: this process / PostgreSQL."""
        return f"{1e6 * self.client / self.operations:,.0f} / {1e6 * self.server / self.operations:,.0f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--accounts", type=int, default=1000)
    parser.add_argument("--statements", type=int, default=0, help="pairs for PostgreSQL's time per call (0: none)")
    parser.add_argument("--batch", type=int, default=5, help="settlements a status callbacks' batch makes at once")
    parser.add_argument("--durable", action="store_true", help="fsync, synchronous_commit, full_page_writes on")
    args = parser.parse_args()
    load_before = os.getloadavg()
    per_call: list[tuple[str, float]] = []
    settings = {**(STATEMENT_STATISTICS if args.statements else {}), **(DURABLE if args.durable else {})}
    with TemporaryPostgres(settings=settings) as server:
        database = Database(server.create_database("bench_ledger"), pool_size=args.threads)
        Base.metadata.create_all(database.engine)
        hot = open_accounts(database, 1)
        spread = open_accounts(database, args.accounts)
        with database.engine.begin() as connection:
            for statement in (*EMPTY_FUNCTIONS, *BARE_FUNCTIONS, CHARGE_AT_SEND_FUNCTION):
                connection.execute(text(statement))
        connections = [database.engine.connect().execution_options(isolation_level="AUTOCOMMIT")
                       for _ in range(args.threads)]
        racing = contenders(args.batch)
        for _, pair in racing:
            pair_rate(pair, connections, hot, 1.0, "warmup")
        scenarios = []
        slices = max(1, round(args.seconds))
        for name, ids in (("1 hot account", hot), (f"{args.accounts} accounts", spread)):
            rates = {"raw UPDATE": 0.0, **{contender: 0.0 for contender, _ in racing}}
            spent = {contender: Spent(server.postmaster_pid) for contender in rates}
            for turn in range(slices):  # they take turns, so a change in the machine's load hits each alike
                rates["raw UPDATE"] += spent["raw UPDATE"].measure(
                    lambda: raw_rate(connections, ids, args.seconds / slices)) / slices
                for contender, pair in racing:
                    rates[contender] += spent[contender].measure(lambda: pair_rate(
                        pair, connections, ids, args.seconds / slices, f"{name.split()[0]}.{turn}")) / slices
            scenarios.append((name, rates, spent))
        if args.statements:
            per_call = server_time_per_call(connections[0], spread, args.statements)
        for connection in connections:
            connection.close()
        database.dispose()
    print(f"$ python {' '.join(shlex.quote(arg) for arg in sys.argv)}")
    durability = "fsync, synchronous_commit on" if args.durable else "fsync off"
    print(f"PostgreSQL ({durability}), {args.seconds:g} s per figure, {args.threads} threads, {os.cpu_count()} CPUs,"
          f" load average {' '.join(f'{x:.2f}' for x in load_before)} before,"
          f" {' '.join(f'{x:.2f}' for x in os.getloadavg())} after")
    print(f"{'pairs/s (ratio to the raw UPDATE)':<34}" + "".join(f" {name:>24}" for name, _, _ in scenarios)
          + "   CPU us a pair, this process / PostgreSQL")
    for contender in scenarios[0][1]:
        print(f"{contender:<34}" + "".join(f" {rates[contender]:>16,.0f} ({rates[contender] / rates['raw UPDATE']:.2f})"
                                             for _, rates, _ in scenarios)
              + "   " + ", ".join(spent[contender].per_operation() for _, _, spent in scenarios))
    for function, micros in per_call:
        print(f"PostgreSQL per call of {function}, one thread, {args.statements:,} pairs: {micros:.0f} us")


if __name__ == "__main__":
    main()
