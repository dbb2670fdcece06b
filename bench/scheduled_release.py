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
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import text  # noqa: E402

from shared.db import Database  # noqa: E402
from shared.messaging.sweeper import _release_due  # noqa: E402
from shared.models import Base  # noqa: E402
from tests.support.index_statistics import entries_read  # noqa: E402
from tests.support.postgres import TemporaryPostgres  # noqa: E402
from tests.support.scheduled_campaign import schedule_unseen_campaign  # noqa: E402

NOW = datetime(2026, 3, 1, 12, tzinfo=UTC)
STATUS_INDEX = "ix_messages_status_updated_at"


def measured(url: str, release) -> tuple[float, int, int]:
    """(seconds, messages released, status index entries read) of `release(database)`."""
    def timed(database: Database) -> tuple[float, int]:
        started = time.perf_counter()
        released = release(database)
        return time.perf_counter() - started, released

    (seconds, released), reads = entries_read(url, "messages", timed)
    return seconds, released, reads[STATUS_INDEX]


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
            database = Database(url, pool_size=1)
            Base.metadata.create_all(database.engine)
            with database.engine.connect() as connection:
                schedule_unseen_campaign(connection, delivered=args.delivered, scheduled=args.scheduled, now=NOW)
            database.dispose()
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
