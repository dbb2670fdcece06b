"""The sweeper releasing a scheduled campaign on PostgreSQL, when the statistics say there are no scheduled messages
(taken before the campaign was scheduled, or a big table's: autovacuum analyzes again only after a tenth of it has
changed). Prints the sweeper's release time and the status index's entries it read, beside a baseline from the same
run: one UPDATE of every due message by status (the least work there is, though a sweep never holds so many locks in
one transaction); asserts nothing.

    PYTHONPATH=. .venv/bin/python bench/scheduled_release.py [--delivered 200000] [--scheduled 100000]
"""

import argparse
import os
import shlex
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import text  # noqa: E402

from shared.db import Database  # noqa: E402
from shared.messaging.sweeper import _release_due  # noqa: E402
from shared.models import Base  # noqa: E402
from tests.support.index_statistics import flush_statistics, index_counts  # noqa: E402
from tests.support.postgres import TemporaryPostgres  # noqa: E402

NOW = datetime(2026, 3, 1, 12, tzinfo=UTC)
MESSAGES = text(
    "INSERT INTO messages (id, account_id, direction, \"to\", \"from\", body, status, segments, encoding,"
    " credits_estimated, attempts, media_urls, created_at, updated_at, send_at)"
    " SELECT :prefix || n, 'acct_' || (n % 1000), 'outbound', '+1415' || lpad((n % 10000000)::text, 7, '0'),"
    " '+14155550199', 'Hi', :status, 1, 'GSM-7', 1000, 0, '[]', :now, :now, :send_at"
    " FROM generate_series(1, :count) AS n")
STATUS_INDEX = "ix_messages_status_updated_at"


def campaign(url: str, delivered: int, scheduled: int) -> None:
    """The table analyzed with only delivered messages, then a campaign scheduled, all due now."""
    database = Database(url, pool_size=1)
    Base.metadata.create_all(database.engine)
    with database.engine.connect() as connection:
        connection.execute(text("ALTER TABLE messages SET (autovacuum_enabled = false)"))  # the statistics stay
        connection.execute(MESSAGES, dict(prefix="d", status="delivered", count=delivered, now=NOW, send_at=None))
        connection.commit()
        connection.execute(text("ANALYZE messages"))
        connection.execute(MESSAGES, dict(prefix="s", status="scheduled", count=scheduled, now=NOW,
                                          send_at=NOW - timedelta(minutes=1)))
        connection.commit()
    database.dispose()


def measured(url: str, release) -> tuple[float, int, int]:
    """(seconds, messages released, status index entries read) of `release(database)` on a pool of one connection."""
    database = Database(url, pool_size=1)
    with database.engine.connect() as reader:
        before = index_counts(reader, "messages", "idx_tup_read")[STATUS_INDEX]
        started = time.perf_counter()
        released = release(database)
        seconds = time.perf_counter() - started
        with database.engine.connect() as connection:
            flush_statistics(connection)
        read = index_counts(reader, "messages", "idx_tup_read")[STATUS_INDEX] - before
    database.dispose()
    return seconds, released, read


def all_at_once(database: Database) -> int:
    with database.unit_of_work() as session:
        return session.execute(text("UPDATE messages SET status = 'accepted', updated_at = :now"
                                    " WHERE status = 'scheduled' AND send_at <= :now"), {"now": NOW}).rowcount


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--delivered", type=int, default=200_000)
    parser.add_argument("--scheduled", type=int, default=100_000)
    args = parser.parse_args()
    load_before = os.getloadavg()
    with TemporaryPostgres() as server:
        rows = []
        for name, release in (("one UPDATE of them all (baseline)", all_at_once),
                              ("the sweeper, batches of 500", lambda database: len(_release_due(database, NOW)))):
            url = server.create_database(f"release_{len(rows)}")
            campaign(url, args.delivered, args.scheduled)
            rows.append((name, *measured(url, release)))
    print(f"$ python {' '.join(shlex.quote(arg) for arg in sys.argv)}")
    print(f"PostgreSQL (fsync off), {args.delivered:,} delivered messages analyzed, then {args.scheduled:,} scheduled"
          f" and due; {os.cpu_count()} CPUs, load average {' '.join(f'{x:.2f}' for x in load_before)} before,"
          f" {' '.join(f'{x:.2f}' for x in os.getloadavg())} after")
    print(f"{'release':<36} {'seconds':>8} {'released':>9} {'status index entries read':>26}")
    for name, seconds, released, read in rows:
        print(f"{name:<36} {seconds:>8.2f} {released:>9,} {read:>26,}")


if __name__ == "__main__":
    main()
