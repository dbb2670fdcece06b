"""How PostgreSQL finds a hold: by its key, whatever it believes of the pending holds.

A statement that names a hold by id and also asks for its status (the settlement function's, a void's, an expiry's,
a renewal's) must be served by the primary key. An index led by the status let the planner scan every pending hold's
entry instead, the dead ones too, whenever it took them to be few: as on a new table, or with statistics taken before
a campaign reserved a hundred thousand of them. The plans are PostgreSQL's own for the ledger's real calls (the
settlement function's statements included), read with auto_explain, generic as a long-lived connection's become.
"""

import re
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import text
from sqlalchemy.orm import Session

from shared.ledger import accounts, book

pytestmark = pytest.mark.postgres
NOW = datetime(2021, 3, 1, tzinfo=timezone.utc)


def test_every_ledger_statement_on_one_hold_uses_its_key_and_the_sweep_reads_only_unresolved_holds(postgres_database):
    # given an account with pending, settled and voided holds, on a table never analyzed
    with postgres_database.unit_of_work() as session:
        account, _ = accounts.create_account(
            session, name="Acme", timezone="UTC", plan_monthly_credits=0, plan_cycle="monthly", plan_rollover="none",
            overdraft=accounts.Overdraft("prepaid"), low_balance_threshold=0, now=NOW)
        book.grant(session, account.id, 10**9, "purchase", granted_at=NOW, idempotency_key="seed")
        held = [book.reserve(session, account.id, 1_000, idempotency_key=f"h{n}", ttl_seconds=60, now=NOW).id
                for n in range(40)]
        for hold_id in held[:10]:
            book.settle(session, hold_id, 900, idempotency_key=f"s{hold_id}", now=NOW)
        for hold_id in held[10:20]:
            book.void(session, hold_id, now=NOW)

    plans: list[str] = []
    with postgres_database.engine.connect() as connection:
        connection.connection.driver_connection.add_notice_handler(lambda notice: plans.append(notice.message_primary))
        for setting in ("LOAD 'auto_explain'", "SET auto_explain.log_min_duration = 0",
                        "SET auto_explain.log_nested_statements = on", "SET client_min_messages = log",
                        "SET plan_cache_mode = force_generic_plan"):
            connection.execute(text(setting))
        # when the ledger settles, voids, renews and expires holds, and the sweep looks for due ones
        session = Session(bind=connection)
        later = NOW + timedelta(hours=1)
        book.settle(connection, held[20], 900, idempotency_key="settled-now", now=NOW)
        book.settle(connection, held[20], 900, idempotency_key="settled-now", now=NOW)  # a replay
        book.void(session, held[21], now=NOW)
        assert book.renew(connection, held[22], expires_at=later)
        due = book.due_holds(session, later + timedelta(minutes=1))
        book.expire(session, due[0], now=later + timedelta(minutes=1))
        session.close()
        connection.rollback()

    # then every statement that reads or updates holds by id is served by their primary key
    on_holds = [plan for plan in plans if re.search(r"(Scan|Update) on holds|Scan using \w+ on holds", plan)]
    by_id = [plan for plan in on_holds if re.search(r"\bid = \$|\(id = \$", plan) and "Limit" not in plan]
    assert len(by_id) >= 5, "\n\n".join(on_holds)
    for plan in by_id:
        assert re.search(r"Scan using pk_holds on holds", plan), plan
    # and the sweep reads the index of the unresolved holds, not every hold that ever was
    sweep = [plan for plan in on_holds if "Limit" in plan]
    assert sweep and all("Index Scan using ix_holds_unresolved_expires_at on holds" in plan for plan in sweep), sweep
