"""ledger functions: ledger_settle burns lots in its own statement, not through ledger_burn

PERFORM ledger_burn(...) ran a nested function call for every settlement, about as costly as the burn's own UPDATE
(pg_stat_statements, track all). The new ledger_settle has the same signature, outcomes and rows; a process of the
release before calls it alike, so this runs while they serve. ledger_burn stays until a later release: a settle
already running the old body when this commits still calls it.

Revision ID: 0024
Revises: 0023
"""
from alembic import op

from shared.ledger.plpgsql import install

revision = '0024'
down_revision = '0023'
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name == 'postgresql':
        install(op.get_bind())


def downgrade() -> None:
    if op.get_bind().dialect.name == 'postgresql':
        op.get_bind().exec_driver_sql(BURN_BEFORE_0024)
        op.get_bind().exec_driver_sql(SETTLE_BEFORE_0024)


# The functions as 0016 installed them, for the downgrade (a migration keeps its own copy: the code moves on); the
# burn too, which a database made by this release never had.
BURN_BEFORE_0024 = """CREATE OR REPLACE FUNCTION ledger_burn(p_account_id text, p_wallet text, p_amount bigint) RETURNS void
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    UPDATE lots SET remaining = CASE WHEN o.running <= p_amount THEN 0 ELSE o.running - p_amount END
      FROM (SELECT l.id, l.remaining,
                   sum(l.remaining) OVER (ORDER BY l.priority, CASE WHEN l.expires_at IS NULL THEN 1 ELSE 0 END,
                                                   l.expires_at, l.granted_at, l.id) AS running
              FROM lots l
             WHERE l.account_id = p_account_id AND l.remaining > 0
               AND ((p_wallet IS NULL AND l.user_id IS NULL) OR l.user_id = p_wallet)) o
     WHERE lots.id = o.id AND o.running - o.remaining < p_amount;
END
$$"""

SETTLE_BEFORE_0024 = """CREATE OR REPLACE FUNCTION ledger_settle(
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
    IF v_from_user <> 0 THEN
        PERFORM ledger_burn(hold.account_id, hold.user_id, v_from_user);
    END IF;
    IF v_from_pool <> 0 THEN
        PERFORM ledger_burn(hold.account_id, NULL, v_from_pool);
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
