"""Client CPU of the send step's two transactions on PostgreSQL, one thread: the claim and storing the sid.

    python bench/send_steps.py [--messages 2000] [--rounds 3]

Starts its own throw-away PostgreSQL (tests.support.postgres) and creates the schema, then, for each round,
accepts --messages messages of one account and runs, one message at a time, each as the worker does: the claim
(the message's locking read, the reservation and marking it `sending`, one unit of work), then storing a sid
Twilio would have answered (no report beat it here, so on PostgreSQL a statement of its own). No Twilio, no
Redis, no other thread: what is left is the worker's own CPU for these two transactions (Python, SQLAlchemy,
psycopg), printed in microseconds per message beside the load average. No assertions: figures only; compare
trees in one sitting.
"""

import argparse
import os
import shlex
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.ledger import NOW, open_accounts  # noqa: E402
from bench.processes import own_cpu_seconds  # noqa: E402
from shared.db import Database  # noqa: E402
from shared.messaging import sending  # noqa: E402
from shared.models import Base, Message  # noqa: E402
from shared.twilio.gateway import SentMessage  # noqa: E402
from tests.support.postgres import TemporaryPostgres  # noqa: E402


def accept(database: Database, account_id: str, ids: list[str]) -> None:
    with database.unit_of_work() as session:
        session.add_all(Message(id=message_id, account_id=account_id, to="+12125550101", from_="+14155550000",
                                body="Hi", status="accepted", segments=1, credits_estimated=1000, created_at=NOW,
                                updated_at=NOW) for message_id in ids)


def claim_all(database: Database, ids: list[str]) -> float:
    """Microseconds of CPU per claim."""
    began = own_cpu_seconds()
    for message_id in ids:
        with database.connection_unit_of_work() as work:
            claim = sending._claim(work, message_id, None, 900, lambda: NOW)
        assert isinstance(claim, sending.Claim), claim
    return 1e6 * (own_cpu_seconds() - began) / len(ids)


def store_all(database: Database, ids: list[str]) -> float:
    """Microseconds of CPU per sid stored."""
    began = own_cpu_seconds()
    for message_id in ids:
        sent = SentMessage(sid="SM" + message_id.removeprefix("msg_"), account_sid="AC" + "1" * 32, status="queued",
                           num_segments=1, price=None, price_unit=None)
        assert sending._store(database, message_id, sent, NOW, settle_final=None) == "queued"
    return 1e6 * (own_cpu_seconds() - began) / len(ids)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    load_before = os.getloadavg()
    figures: dict[str, list[float]] = {"claim": [], "store sid": []}
    with TemporaryPostgres() as server:
        database = Database(server.create_database("bench_send_steps"), pool_size=2)
        Base.metadata.create_all(database.engine)
        account_id, = open_accounts(database, 1)
        for round_ in range(args.rounds):
            ids = [f"msg_{round_:04d}{index:028d}" for index in range(args.messages)]
            accept(database, account_id, ids)
            figures["claim"].append(claim_all(database, ids))
            figures["store sid"].append(store_all(database, ids))
        database.dispose()
    print(f"$ python {' '.join(shlex.quote(arg) for arg in sys.argv)}")
    print(f"PostgreSQL (fsync off), one thread, {args.messages:,} messages a round, {os.cpu_count()} CPUs,"
          f" load average {' '.join(f'{x:.2f}' for x in load_before)} before,"
          f" {' '.join(f'{x:.2f}' for x in os.getloadavg())} after")
    for name, values in figures.items():
        print(f"{name:<10} client CPU per message (us), each round: {' / '.join(f'{v:,.0f}' for v in values)}")


if __name__ == "__main__":
    main()
