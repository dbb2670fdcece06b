"""ledger functions: ledger_reserve inserts the hold before it locks the account's row

The hot account's row was locked from the reservation's UPDATE through the hold's INSERT to COMMIT; the INSERT now
comes first, so the row is locked only from its UPDATE on, and a replay (the key already held) answers its first
hold without locking the row at all. No room: the new hold is deleted again. Same signature, outcomes and rows (the
equivalence test compares them with the Python ledger); a process of the release before calls it alike, so this
runs while they serve.

Revision ID: 0027
Revises: 0026
"""
from alembic import op

revision = '0027'
down_revision = '0026'
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name == 'postgresql':
        op.get_bind().exec_driver_sql(RESERVE_0027)


def downgrade() -> None:
    if op.get_bind().dialect.name == 'postgresql':
        op.get_bind().exec_driver_sql(RESERVE_BEFORE_0027)


# The function as this release made it, and as 0016 had it for the downgrade (a migration keeps its own copies: the
# code moves on).
RESERVE_0027 = """CREATE OR REPLACE FUNCTION ledger_reserve(
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

RESERVE_BEFORE_0027 = """CREATE OR REPLACE FUNCTION ledger_reserve(
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
        INSERT INTO holds AS h (account_id, user_id, amount, from_allocation, status, reference, idempotency_key,
                               created_at, expires_at)
        VALUES (p_account_id, p_user_id, p_amount, v_wallet IS NOT NULL, 'pending', p_reference,
                p_idempotency_key, p_created_at, p_expires_at)
        ON CONFLICT (idempotency_key) DO NOTHING
        RETURNING h.* INTO hold;
        IF FOUND THEN
            outcome := 'held';
            RETURN;
        END IF;
        -- a replay that found room again: give the room back, answer with the first hold
        UPDATE accounts a SET held = a.held - p_amount,
                              allocated_held = a.allocated_held - CASE WHEN v_wallet IS NULL THEN 0 ELSE p_amount END,
                              updated_at = now()
         WHERE a.id = p_account_id;
        IF v_wallet IS NOT NULL THEN
            UPDATE users u SET held = u.held - p_amount WHERE u.id = v_wallet;
        END IF;
    END IF;
    IF NOT v_claimed AND p_gate THEN
        SELECT a.next_expiry_at <= p_created_at INTO v_due FROM accounts a WHERE a.id = p_account_id;
        IF v_due THEN
            outcome := 'expiry_due';
            RETURN;
        END IF;
    END IF;
    SELECT h.* INTO hold FROM holds h WHERE h.idempotency_key = p_idempotency_key;
    outcome := CASE WHEN FOUND THEN 'replay' ELSE 'refused' END;
END
$$
"""
