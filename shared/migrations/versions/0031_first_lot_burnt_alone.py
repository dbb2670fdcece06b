"""ledger functions: ledger_settle tries the first lot in burn order alone before the window over them all

A settlement burnt its charge from the wallet's lots with one UPDATE over a window of every lot with credits left,
sorted in burn order and joined back to the lots: the costliest of its statements after the entry's INSERT. Most
often the first lot in burn order holds the whole charge, so ledger_settle now takes it from that row alone (found
by the burn-order index, LIMIT 1) and runs the window only when it does not. Each lot ends as the window leaves it;
same signature, outcomes and rows (the equivalence test compares them with the Python ledger), so a process of the
release before calls it alike and this runs while they serve.

Revision ID: 0031
Revises: 0030
"""
from alembic import op

revision = '0031'
down_revision = '0030'
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name == 'postgresql':
        op.get_bind().exec_driver_sql(SETTLE_0031)


def downgrade() -> None:
    if op.get_bind().dialect.name == 'postgresql':
        op.get_bind().exec_driver_sql(SETTLE_BEFORE_0031)


# The function as this release made it, and as 0024 had it for the downgrade (a migration keeps its own copies: the
# code moves on).
SETTLE_0031 = """CREATE OR REPLACE FUNCTION ledger_settle(
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
    IF p_gate THEN
        SELECT a.next_expiry_at <= p_now INTO v_due
          FROM holds h JOIN accounts a ON a.id = h.account_id
         WHERE h.id = v_hold_id AND h.status IN ('pending', 'expired');
        IF v_due THEN
            outcome := 'expiry_due';
            RETURN;
        END IF;
    END IF;
    UPDATE holds h SET status = 'settled', resolved_at = p_now, settled_amount = v_charge
     WHERE h.id = v_hold_id AND h.status = 'pending'
    RETURNING h.* INTO hold;
    IF FOUND THEN
        v_release := hold.amount;
    ELSE
        -- an expired hold released its credits already; reconciliation may still settle it once
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
        PERFORM 1 FROM accounts a WHERE a.id = hold.account_id FOR UPDATE;
        v_from_user := v_charge;  -- all of it, below zero if need be: the user is then locked
        UPDATE users u SET held = u.held - v_release, balance = u.balance - v_from_user WHERE u.id = hold.user_id;
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
    RETURNING a.balance, a.status, a.next_expiry_at INTO new_balance, account_status, next_expiry_at;
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
$$"""

SETTLE_BEFORE_0031 = """CREATE OR REPLACE FUNCTION ledger_settle(
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
    IF p_gate THEN
        SELECT a.next_expiry_at <= p_now INTO v_due
          FROM holds h JOIN accounts a ON a.id = h.account_id
         WHERE h.id = v_hold_id AND h.status IN ('pending', 'expired');
        IF v_due THEN
            outcome := 'expiry_due';
            RETURN;
        END IF;
    END IF;
    UPDATE holds h SET status = 'settled', resolved_at = p_now, settled_amount = v_charge
     WHERE h.id = v_hold_id AND h.status = 'pending'
    RETURNING h.* INTO hold;
    IF FOUND THEN
        v_release := hold.amount;
    ELSE
        -- an expired hold released its credits already; reconciliation may still settle it once
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
        PERFORM 1 FROM accounts a WHERE a.id = hold.account_id FOR UPDATE;
        v_from_user := v_charge;  -- all of it, below zero if need be: the user is then locked
        UPDATE users u SET held = u.held - v_release, balance = u.balance - v_from_user WHERE u.id = hold.user_id;
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
    RETURNING a.balance, a.status, a.next_expiry_at INTO new_balance, account_status, next_expiry_at;
    -- Burn the charge from its wallet's lots (the user's own, else the pool's) in burn order: each lot keeps
    -- max(0, running - amount). A hold on a user's credits charges that user alone, so one wallet burns.
    IF v_from_user <> 0 THEN
        v_burn_wallet := hold.user_id;
        v_burn := v_from_user;
    ELSE
        v_burn := v_from_pool;
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
$$"""
