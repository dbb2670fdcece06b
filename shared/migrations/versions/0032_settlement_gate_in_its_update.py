"""ledger functions: ledger_settle checks the expiry gate in its account UPDATE; no foreign keys from entries to
accounts and holds

A settlement ran a SELECT of its hold and account before anything else, to find an expiry to write first (the gate):
a statement, and its executor's start, for every settlement, though an expiry is due about once a month an account.
The gate is now a condition of the account's UPDATE, read on the row that UPDATE locks; when it holds the hold is put
back as it was (pending, unresolved) and the call answers `expiry_due` as before. A reconciliation's settlement of
an expired hold, which the account UPDATE does not release, keeps its SELECT.

Every usage entry also checked its account's and its hold's rows: two statements more each, on rows the same
transaction had just updated. Entries are written by the ledger alone, in the transaction that updates both;
accounts are never deleted, nor is a hold with entries. `shared.ledger.verify` reports an entry naming either that
does not exist. The constraints are dropped as 0025 dropped its own, each alone within a lock timeout, so a long
transaction on `accounts` never holds the sends behind a waiting ALTER. Same signature and outcomes: the release
before calls the function alike on either schema.

Revision ID: 0032
Revises: 0031
"""
from alembic import context, op

revision = '0032'
down_revision = '0031'
branch_labels = None
depends_on = None

FOREIGN_KEYS = [  # name, column, referred table
    ('fk_entries_account_id_accounts', 'account_id', 'accounts'),
    ('fk_entries_hold_id_holds', 'hold_id', 'holds'),
]


def _revision(name: str):
    """An earlier migration's module: its copies of what this one restores or reuses (those never change)."""
    return context.script.get_revision(name).module


def upgrade() -> None:
    if op.get_bind().dialect.name == 'postgresql':
        op.get_bind().exec_driver_sql(SETTLE_0032)
        with op.get_context().autocommit_block():
            _revision('0025')._drop_briefly([('entries', name) for name, _column, _referred in FOREIGN_KEYS])
        return
    with op.batch_alter_table('entries') as batch:
        for name, _column, _referred in FOREIGN_KEYS:
            batch.drop_constraint(name, type_='foreignkey')


def downgrade() -> None:
    with op.batch_alter_table('entries') as batch:
        for name, column, referred in FOREIGN_KEYS:
            batch.create_foreign_key(name, referred, [column], ['id'])
    if op.get_bind().dialect.name == 'postgresql':
        op.get_bind().exec_driver_sql(_revision('0031').SETTLE_0031)


# The function as this release made it (a migration keeps its own copy: the code moves on).
SETTLE_0032 = """CREATE OR REPLACE FUNCTION ledger_settle(
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
