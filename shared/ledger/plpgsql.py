"""PostgreSQL's reserve and settle as PL/pgSQL functions: one round trip each instead of two and five.

The hot account's row lock is held from the first UPDATE to COMMIT, so every round trip (and the
Python between them) inside that window caps the account's throughput. These functions do exactly
what ledger.reserve / ledger.settle do in Python on SQLite, statement for statement (but the lot burn, which
first tries the first lot in burn order alone, and the settlement's expiry gate, which is a condition of its account
UPDATE, not a SELECT before it) and in the same lock order (hold -> account -> user -> lots);
tests/integration/ledger/test_plpgsql_equivalence.py runs random workloads through both and compares every row.
They never raise for a business outcome: they answer `outcome` and the caller raises the domain error, so the
caller's transaction stays usable.

Each statement of a VOLATILE function takes a fresh snapshot under READ COMMITTED, so the lot burn
(after the account UPDATE) sees what the previous holder of the account lock committed.

Installed by the migrations 0002, 0008 (which added the expiry gate), 0016 (users' own credits), 0024 (which
inlined the lot burn, a nested function call that cost as much as its statement), 0027 (the hold inserted
before the account's row is locked), 0031 (the lot burn's first lot tried alone) and 0032 (the settlement's
expiry gate in its account UPDATE) and, for schemas made with `Base.metadata.create_all`, by the `after_create` hook
below.
"""

from sqlalchemy import Connection, event

from shared.models import Base

# (outcome, hold) -- outcome: held | replay (the key's first hold) | refused | no_user | expiry_due (with
# p_gate: a lot expired by p_created_at and its expiry is not written yet; the caller writes it, then calls
# again without the gate)
RESERVE_FUNCTION = """
CREATE OR REPLACE FUNCTION ledger_reserve(
    p_account_id text, p_user_id text, p_amount bigint, p_reference text, p_idempotency_key text,
    p_created_at timestamptz, p_expires_at timestamptz, p_gate boolean, OUT outcome text, OUT hold holds)
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    v_role text;
    v_wallet text;
    v_claimed boolean;
    v_due boolean;
BEGIN
    IF p_user_id IS NOT NULL THEN
        SELECT u.role INTO v_role FROM users u
         WHERE u.id = p_user_id AND u.account_id = p_account_id AND u.deleted_at IS NULL;
        IF NOT FOUND THEN
            outcome := 'no_user';
            RETURN;
        END IF;
        IF v_role = 'user' THEN
            v_wallet := p_user_id;
        END IF;
    END IF;
    -- The hold first: the account's row is locked last, from its UPDATE to COMMIT, and a replay never locks it.
    INSERT INTO holds AS h (account_id, user_id, amount, from_allocation, status, reference, idempotency_key,
                           created_at, expires_at)
    VALUES (p_account_id, p_user_id, p_amount, v_wallet IS NOT NULL, 'pending', p_reference,
            p_idempotency_key, p_created_at, p_expires_at)
    ON CONFLICT (idempotency_key) DO NOTHING
    RETURNING h.* INTO hold;
    IF NOT FOUND THEN
        SELECT h.* INTO hold FROM holds h WHERE h.idempotency_key = p_idempotency_key;
        outcome := 'replay';
        RETURN;
    END IF;
    IF v_wallet IS NULL THEN
        UPDATE accounts a SET held = a.held + p_amount, updated_at = now()
         WHERE a.id = p_account_id AND a.status = 'active'
           AND (NOT p_gate OR a.next_expiry_at IS NULL OR a.next_expiry_at > p_created_at)
           AND (a.overdraft_policy = 'postpaid'
                OR (a.balance - a.allocated) - (a.held - a.allocated_held) - p_amount >= -a.overdraft_limit);
        v_claimed := FOUND;
    ELSE
        UPDATE accounts a SET held = a.held + p_amount, allocated_held = a.allocated_held + p_amount,
                              updated_at = now()
         WHERE a.id = p_account_id AND a.status = 'active'
           AND (NOT p_gate OR a.next_expiry_at IS NULL OR a.next_expiry_at > p_created_at);
        v_claimed := FOUND;
        IF v_claimed THEN
            UPDATE users u SET held = u.held + p_amount WHERE u.id = v_wallet AND u.balance - u.held >= p_amount;
            v_claimed := FOUND;
            IF NOT v_claimed THEN
                UPDATE accounts a SET held = a.held - p_amount, allocated_held = a.allocated_held - p_amount,
                                      updated_at = now()
                 WHERE a.id = p_account_id;
            END IF;
        END IF;
    END IF;
    IF v_claimed THEN
        outcome := 'held';
        RETURN;
    END IF;
    -- no room: the hold goes, and the key is free for a later try
    DELETE FROM holds h WHERE h.id = hold.id;
    hold := NULL;
    IF p_gate THEN
        SELECT a.next_expiry_at <= p_created_at INTO v_due FROM accounts a WHERE a.id = p_account_id;
        IF v_due THEN
            outcome := 'expiry_due';
            RETURN;
        END IF;
    END IF;
    outcome := 'refused';
END
$$
"""

# (outcome, hold, new_balance, account_status, next_expiry_at) -- outcome: settled | replay (not pending nor
# expired: the caller answers the first settlement or a Conflict) | expiry_due (with p_gate: the hold's account
# has an expiry to write first; the caller writes it, then calls again without the gate). After `settled`, a
# next_expiry_at at or before p_now means what the hold did not use of an expired lot is to lapse.
SETTLE_FUNCTION = """
CREATE OR REPLACE FUNCTION ledger_settle(
    p_hold_id bigint, p_hold_key text, p_actual bigint, p_carrier_fee bigint, p_reference text,
    p_idempotency_key text, p_now timestamptz, p_lock_reason text, p_gate boolean,
    OUT outcome text, OUT hold holds, OUT new_balance bigint, OUT account_status text,
    OUT next_expiry_at timestamptz)
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    v_due boolean;
    v_hold_id bigint := p_hold_id;
    v_charge bigint := p_actual + p_carrier_fee;
    v_release bigint;
    v_from_user bigint := 0;
    v_from_pool bigint;
    v_burn_wallet text;
    v_burn bigint;
BEGIN
    IF v_hold_id IS NULL THEN
        SELECT h.id INTO v_hold_id FROM holds h WHERE h.idempotency_key = p_hold_key;
    END IF;
    UPDATE holds h SET status = 'settled', resolved_at = p_now, settled_amount = v_charge
     WHERE h.id = v_hold_id AND h.status = 'pending'
    RETURNING h.* INTO hold;
    IF FOUND THEN
        v_release := hold.amount;
    ELSE
        -- an expired hold released its credits already; reconciliation may still settle it once
        IF p_gate THEN
            SELECT a.next_expiry_at <= p_now INTO v_due
              FROM holds h JOIN accounts a ON a.id = h.account_id
             WHERE h.id = v_hold_id AND h.status = 'expired';
            IF v_due THEN
                outcome := 'expiry_due';
                RETURN;
            END IF;
        END IF;
        UPDATE holds h SET status = 'settled', resolved_at = p_now, settled_amount = v_charge
         WHERE h.id = v_hold_id AND h.status = 'expired'
        RETURNING h.* INTO hold;
        IF NOT FOUND THEN
            outcome := 'replay';
            RETURN;
        END IF;
        v_release := 0;
    END IF;
    IF hold.from_allocation THEN
        v_from_user := v_charge;  -- all of it, below zero if need be: the user is then locked
    END IF;
    v_from_pool := v_charge - v_from_user;
    UPDATE accounts a SET
        held = a.held - v_release,
        allocated_held = a.allocated_held - CASE WHEN hold.from_allocation THEN v_release ELSE 0 END,
        allocated = a.allocated - v_from_user,
        balance = a.balance - v_charge,
        status = CASE WHEN a.status = 'active' AND a.overdraft_policy = 'prepaid'
                           AND a.balance - a.allocated - v_from_pool < 0 THEN 'locked' ELSE a.status END,
        status_reason = CASE WHEN a.status = 'active' AND a.overdraft_policy = 'prepaid'
                                  AND a.balance - a.allocated - v_from_pool < 0 THEN p_lock_reason
                             ELSE a.status_reason END,
        updated_at = now()
     WHERE a.id = hold.account_id
       AND (NOT p_gate OR v_release = 0 OR a.next_expiry_at IS NULL OR a.next_expiry_at > p_now)
    RETURNING a.balance, a.status, a.next_expiry_at INTO new_balance, account_status, next_expiry_at;
    IF NOT FOUND THEN
        -- the gate: an expiry to write first. The hold is put back as it was (pending, unresolved): one statement
        -- more, once per expiry, instead of a SELECT before every settlement.
        UPDATE holds h SET status = 'pending', resolved_at = NULL, settled_amount = NULL WHERE h.id = hold.id;
        hold := NULL;
        outcome := 'expiry_due';
        RETURN;
    END IF;
    IF hold.from_allocation THEN  -- after its account's row, as the lock order has it
        UPDATE users u SET held = u.held - v_release, balance = u.balance - v_from_user WHERE u.id = hold.user_id;
    END IF;
    -- Burn the charge from its wallet's lots (the user's own, else the pool's) in burn order: each lot keeps
    -- max(0, running - amount), as book._burn's one UPDATE does. A hold on a user's credits charges that user
    -- alone, so one wallet burns.
    IF v_from_user <> 0 THEN
        v_burn_wallet := hold.user_id;
        v_burn := v_from_user;
    ELSE
        v_burn := v_from_pool;
    END IF;
    IF v_burn <> 0 THEN
        -- Most often the first lot in burn order has enough: that one row alone, without the window over them all.
        UPDATE lots SET remaining = lots.remaining - v_burn
         WHERE lots.id = (SELECT l.id FROM lots l
                           WHERE l.account_id = hold.account_id AND l.remaining > 0
                             AND ((v_burn_wallet IS NULL AND l.user_id IS NULL) OR l.user_id = v_burn_wallet)
                           ORDER BY l.priority, CASE WHEN l.expires_at IS NULL THEN 1 ELSE 0 END, l.expires_at,
                                    l.granted_at, l.id
                           LIMIT 1)
           AND lots.remaining >= v_burn;
        IF FOUND THEN
            v_burn := 0;
        END IF;
    END IF;
    IF v_burn <> 0 THEN
        UPDATE lots SET remaining = CASE WHEN o.running <= v_burn THEN 0 ELSE o.running - v_burn END
          FROM (SELECT l.id, l.remaining,
                       sum(l.remaining) OVER (ORDER BY l.priority, CASE WHEN l.expires_at IS NULL THEN 1 ELSE 0 END,
                                                       l.expires_at, l.granted_at, l.id) AS running
                  FROM lots l
                 WHERE l.account_id = hold.account_id AND l.remaining > 0
                   AND ((v_burn_wallet IS NULL AND l.user_id IS NULL) OR l.user_id = v_burn_wallet)) o
         WHERE lots.id = o.id AND o.running - o.remaining < v_burn;
    END IF;
    INSERT INTO entries (account_id, user_id, at, kind, amount, balance_after, reference, hold_id,
                         idempotency_key, memo)
    VALUES (hold.account_id, hold.user_id, p_now, 'usage', -p_actual, new_balance + p_carrier_fee,
            COALESCE(NULLIF(p_reference, ''), hold.reference), hold.id, p_idempotency_key, NULL);
    IF p_carrier_fee <> 0 THEN
        INSERT INTO entries (account_id, user_id, at, kind, amount, balance_after, reference, hold_id,
                             idempotency_key, memo)
        VALUES (hold.account_id, hold.user_id, p_now, 'carrier_fee', -p_carrier_fee, new_balance,
                COALESCE(NULLIF(p_reference, ''), hold.reference), hold.id, p_idempotency_key || ':carrier_fee',
                NULL);
    END IF;
    outcome := 'settled';
END
$$
"""

FUNCTIONS = (RESERVE_FUNCTION, SETTLE_FUNCTION)

# The calls, in psycopg's own parameter style: run on the driver's cursor (book._call_function, book._settle_calls),
# which skips SQLAlchemy's statement compilation and result layer.
RESERVE = "SELECT r.outcome, (r.hold).* FROM ledger_reserve(%s, %s, %s, %s, %s, %s, %s, %s) r"
# ledger_reserve for each of a batch, in order, in one statement (book.reserve_each): the batch as one JSON array of
# objects (book._batch_json: psycopg adapts a list to an array in Python, orjson writes the whole batch in a fraction of
# that), then the created_at they share.
RESERVE_EACH = ("SELECT u.position, r.outcome, (r.hold).*"
                " FROM ROWS FROM (json_to_recordset(%s::json) AS (account_id text, user_id text, amount bigint,"
                " reference text, idempotency_key text, expires_at timestamptz))"
                " WITH ORDINALITY AS u(account_id, user_id, amount, reference, idempotency_key, expires_at, position)"
                " CROSS JOIN LATERAL ledger_reserve(u.account_id, u.user_id, u.amount, u.reference, u.idempotency_key,"
                " %s, u.expires_at, true) r")
# ledger_settle for one hold: a lone settlement's call, its values as they are
SETTLE = ("SELECT 1::bigint AS position, r.outcome, r.new_balance, r.account_status, r.next_expiry_at, (r.hold).*"
          " FROM ledger_settle(%s, %s, %s, %s, %s, %s, %s, %s, %s) r")
# ledger_settle for each of a batch, in order, in one statement: the batch as one JSON array of objects (as
# RESERVE_EACH's), then the now, lock reason and gate they share.
SETTLE_MANY = ("SELECT u.position, r.outcome, r.new_balance, r.account_status, r.next_expiry_at, (r.hold).*"
               " FROM ROWS FROM (json_to_recordset(%s::json) AS (hold_id bigint, hold_key text, actual bigint,"
               " carrier_fee bigint, reference text, idempotency_key text))"
               " WITH ORDINALITY AS u(hold_id, hold_key, actual, carrier_fee, reference, idempotency_key, position)"
               " CROSS JOIN LATERAL ledger_settle(u.hold_id, u.hold_key, u.actual, u.carrier_fee, u.reference,"
               " u.idempotency_key, %s, %s, %s) r ORDER BY u.position")


def install(connection: Connection) -> None:
    """Create or replace the functions (idempotent); a no-op on any database but PostgreSQL."""
    if connection.dialect.name != "postgresql":
        return
    for function in FUNCTIONS:
        connection.exec_driver_sql(function)


@event.listens_for(Base.metadata, "after_create")
def _after_create(_metadata, connection: Connection, **_kw) -> None:
    install(connection)
