"""expiry at spend time: accounts.next_expiry_at, pending holds by account, and the gated ledger functions

Revision ID: 0008
Revises: 0007
"""
import sqlalchemy as sa
from alembic import op

from shared.ledger.plpgsql import install

revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None

# What can still lapse: open lots with an expiry, less plan and rollover lots while rollover protection is on.
BACKFILL = """
UPDATE accounts SET next_expiry_at = (
    SELECT min(lots.expires_at) FROM lots
     WHERE lots.account_id = accounts.id AND lots.remaining > 0 AND lots.expires_at IS NOT NULL
       AND NOT (accounts.rollover_protection AND lots.kind IN ('plan', 'rollover')))
"""


def upgrade() -> None:
    with op.batch_alter_table('accounts') as batch:
        batch.add_column(sa.Column('next_expiry_at', sa.DateTime(timezone=True), nullable=True))
    op.execute(BACKFILL)
    with op.batch_alter_table('holds') as batch:
        batch.drop_index('ix_holds_account_id')
        batch.create_index('ix_holds_account_status', ['account_id', 'status'])
    if op.get_bind().dialect.name == 'postgresql':
        op.execute('DROP FUNCTION IF EXISTS ledger_settle(bigint, text, bigint, bigint, text, text, timestamptz, text)')
        op.execute('DROP FUNCTION IF EXISTS ledger_reserve(text, text, bigint, text, text, timestamptz, timestamptz)')
        install(op.get_bind())


def downgrade() -> None:
    if op.get_bind().dialect.name == 'postgresql':
        op.execute('DROP FUNCTION IF EXISTS ledger_settle(bigint, text, bigint, bigint, text, text, timestamptz, text,'
                   ' boolean)')
        op.execute('DROP FUNCTION IF EXISTS ledger_reserve(text, text, bigint, text, text, timestamptz, timestamptz,'
                   ' boolean)')
        op.get_bind().exec_driver_sql(RESERVE_BEFORE_0008)
        op.get_bind().exec_driver_sql(SETTLE_BEFORE_0008)
    with op.batch_alter_table('holds') as batch:
        batch.drop_index('ix_holds_account_status')
        batch.create_index('ix_holds_account_id', ['account_id'])
    with op.batch_alter_table('accounts') as batch:
        batch.drop_column('next_expiry_at')


# The functions as 0002 installed them, for the downgrade (a migration keeps its own copy: the code moves on).
RESERVE_BEFORE_0008 = """CREATE OR REPLACE FUNCTION ledger_reserve(
    p_account_id text, p_user_id text, p_amount bigint, p_reference text, p_idempotency_key text,
    p_created_at timestamptz, p_expires_at timestamptz, OUT outcome text, OUT hold holds)
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    v_role text;
    v_wallet text;
    v_claimed boolean;
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
           AND (a.overdraft_policy = 'postpaid'
                OR (a.balance - a.allocated) - (a.held - a.allocated_held) - p_amount >= -a.overdraft_limit);
        v_claimed := FOUND;
    ELSE
        UPDATE accounts a SET held = a.held + p_amount, allocated_held = a.allocated_held + p_amount,
                              updated_at = now()
         WHERE a.id = p_account_id AND a.status = 'active';
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
    SELECT h.* INTO hold FROM holds h WHERE h.idempotency_key = p_idempotency_key;
    outcome := CASE WHEN FOUND THEN 'replay' ELSE 'refused' END;
END
$$
"""

SETTLE_BEFORE_0008 = """CREATE OR REPLACE FUNCTION ledger_settle(
    p_hold_id bigint, p_hold_key text, p_actual bigint, p_carrier_fee bigint, p_reference text,
    p_idempotency_key text, p_now timestamptz, p_lock_reason text,
    OUT outcome text, OUT hold holds, OUT new_balance bigint, OUT account_status text)
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    v_hold_id bigint := p_hold_id;
    v_charge bigint := p_actual + p_carrier_fee;
    v_release bigint;
    v_user_balance bigint;
    v_from_user bigint := 0;
    v_from_pool bigint;
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
        SELECT u.balance INTO v_user_balance FROM users u WHERE u.id = hold.user_id;
        v_from_user := LEAST(v_charge, GREATEST(v_user_balance, 0));
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
    RETURNING a.balance, a.status INTO new_balance, account_status;
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
$$
"""
