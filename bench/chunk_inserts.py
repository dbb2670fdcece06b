"""One campaign chunk's inserts three ways on PostgreSQL (`python bench/chunk_inserts.py [rows]`).

A chunk inserts 1,000 holds (ids wanted back) and 1,000 messages. Compared: SQLAlchemy's executemany
with RETURNING (its "insertmanyvalues": pages of rows inlined into one multi-VALUES statement of
thousands of parameters, parsed anew each time), psycopg's pipelined executemany of one prepared
statement, and COPY (what shared.db.copy_rows does; hold ids taken from the sequence first). Prints
the median wall time and this process's CPU per chunk; nothing here passes or fails.
"""

import os
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sqlalchemy import insert  # noqa: E402

from shared.db import Database, copy_rows  # noqa: E402
from shared.ledger import book  # noqa: E402
from shared.ledger.accounts import Overdraft, create_account  # noqa: E402
from shared.models import Base, Hold, Message  # noqa: E402
from tests.support.postgres import TemporaryPostgres  # noqa: E402

REPEATS = 9


def main(rows: int) -> None:
    with TemporaryPostgres() as postgres:
        database = Database(postgres.create_database("bench_chunk_inserts"))
        Base.metadata.create_all(database.engine)
        now = datetime.now(UTC)
        with database.unit_of_work() as session:
            account, _ = create_account(session, name="Bench", timezone="UTC", plan_monthly_credits=0,
                                        plan_cycle="monthly", plan_rollover="none", overdraft=Overdraft("prepaid"),
                                        low_balance_threshold=0, now=now)
        holds = Hold.__table__

        def hold_rows(run: str) -> list[dict]:
            return [dict(account_id=account.id, user_id=None, amount=1000, from_allocation=False, status="pending",
                         reference=f"{run}-{index}", idempotency_key=f"{run}-{index}", created_at=now,
                         expires_at=now + timedelta(minutes=15)) for index in range(rows)]

        def message_rows(run: str) -> list[dict]:
            return [{"id": f"msg_{run}_{index}", "account_id": account.id, "user_id": None, "campaign_id": "cmp_bench",
                     "direction": "outbound", "to": "+12125550100", "from": "+14155550000",
                     "body": "Hi Name1, Agent1 here: open house Sunday 2pm. Reply STOP to opt out.", "media_urls": None,
                     "status": "accepted", "segments": 1, "encoding": "GSM-7", "credits_estimated": 1000,
                     "credits_charged": None, "hold_id": None, "error_message": None, "send_at": None, "attempts": 0,
                     "created_at": now, "updated_at": now} for index in range(rows)]

        def holds_multi_values(session, run):
            list(session.execute(insert(holds).returning(holds.c.id, sort_by_parameter_order=True), hold_rows(run)))

        def holds_executemany(session, run):
            statement = insert(holds).returning(holds.c.id).compile(dialect=session.get_bind().dialect,
                                                                    column_keys=list(hold_rows(run)[0]))
            with session.connection().connection.driver_connection.cursor() as cursor:
                cursor.executemany(str(statement), hold_rows(run), returning=True)

        def holds_copy(session, run):
            ids = book._new_hold_ids(session, rows)
            copy_rows(session, holds, [{"id": hold_id, **row} for hold_id, row in zip(ids, hold_rows(run))])

        def messages_executemany(session, run):
            session.connection().execute(insert(Message.__table__), message_rows(run))

        def messages_copy(session, run):
            copy_rows(session, Message.__table__, message_rows(run))

        print(f"{rows:,} rows a chunk, median of {REPEATS} chunks (load average {os.getloadavg()[0]:.1f}):")
        for name, write in [("holds, SQLAlchemy multi-VALUES RETURNING", holds_multi_values),
                            ("holds, psycopg executemany RETURNING", holds_executemany),
                            ("holds, sequence ids + COPY", holds_copy),
                            ("messages, psycopg executemany", messages_executemany),
                            ("messages, COPY", messages_copy)]:
            walls, cpus = [], []
            for run in range(REPEATS):
                with database.unit_of_work() as session:
                    session.connection()
                    wall, cpu = time.perf_counter(), time.process_time()
                    write(session, f"{write.__name__}-{run}")
                    walls.append(time.perf_counter() - wall)
                    cpus.append(time.process_time() - cpu)
            print(f"  {name:42s} {statistics.median(walls) * 1000:6.1f} ms wall, "
                  f"{statistics.median(cpus) * 1000:6.1f} ms CPU here")
        database.dispose()


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 1000)
