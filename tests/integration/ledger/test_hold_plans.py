"""How PostgreSQL finds a hold: by its key, whatever it believes of the pending holds.

A statement that names a hold by id and also asks for its status (settle, void, expire, renew, and the settlement
function's own) must be served by the primary key. An index led by the status lets the planner scan every pending
hold's entry instead, the dead ones too, whenever it takes them to be few: as on a new table, or with statistics
taken before a campaign reserved a hundred thousand of them.
"""

from datetime import datetime, timedelta, timezone

from sqlalchemy import text

from shared.ledger import accounts, book

NOW = datetime(2021, 3, 1, tzinfo=timezone.utc)


def plan(connection, statement: str) -> str:
    return "\n".join(row[0] for row in connection.execute(text(f"EXPLAIN {statement}")))


def test_a_hold_named_by_id_is_found_by_its_key_and_the_sweep_reads_only_unresolved_holds(postgres_database):
    # given an account with pending, settled and voided holds, on a table never analyzed
    with postgres_database.unit_of_work() as session:
        account, _ = accounts.create_account(
            session, name="Acme", timezone="UTC", plan_monthly_credits=0, plan_cycle="monthly", plan_rollover="none",
            overdraft=accounts.Overdraft("prepaid"), low_balance_threshold=0, now=NOW)
        book.grant(session, account.id, 10**9, "purchase", granted_at=NOW, idempotency_key="seed")
        held = [book.reserve(session, account.id, 1_000, idempotency_key=f"h{n}", ttl_seconds=60, now=NOW).id
                for n in range(30)]
        for hold_id in held[:10]:
            book.settle(session, hold_id, 900, idempotency_key=f"s{hold_id}", now=NOW)
        for hold_id in held[10:20]:
            book.void(session, hold_id, now=NOW)

    with postgres_database.engine.connect() as connection:
        connection.execute(text("SET plan_cache_mode = force_generic_plan"))
        # when PostgreSQL plans each statement that names a hold by id and asks for its status
        connection.execute(text("PREPARE resolve(bigint, text) AS UPDATE holds SET status = 'voided'"
                                " WHERE id = $1 AND status = $2"))
        connection.execute(text("PREPARE settled(bigint) AS UPDATE holds SET status = 'settled'"
                                " WHERE id = $1 AND status = 'pending'"))
        connection.execute(text("PREPARE gate(bigint) AS SELECT 1 FROM holds h WHERE h.id = $1"
                                " AND h.status IN ('pending', 'expired')"))
        # then each is served by the primary key
        for statement in ("resolve(1, 'pending')", "settled(1)", "gate(1)"):
            assert "pk_holds" in plan(connection, f"EXECUTE {statement}"), plan(connection, f"EXECUTE {statement}")
        # and the sweep reads the index of unresolved holds, not every hold that ever was
        connection.execute(text("SET enable_seqscan = off"))
        sweep = plan(connection, "SELECT id FROM holds WHERE resolved_at IS NULL AND status = 'pending'"
                                 f" AND expires_at <= '{(NOW + timedelta(hours=1)).isoformat()}'"
                                 " ORDER BY expires_at, id LIMIT 500")
        assert "ix_holds_unresolved_expires_at" in sweep, sweep
        connection.rollback()
