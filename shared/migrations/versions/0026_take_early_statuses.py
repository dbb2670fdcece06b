"""take_early_statuses: the send step claims the reports that beat its sid in the statement that stores it

Storing a sid took the sid's lock in its RETURNING, then read and deleted the early reports in a statement of its
own, whose snapshot had to come after the lock. This PL/pgSQL function does both from the RETURNING: its DELETE,
a statement of a VOLATILE function, takes its snapshot after the lock all the same. Only the code of this release
calls it; the release before still deletes the reports itself, so this runs while it serves.

Revision ID: 0026
Revises: 0025
"""
from alembic import op

revision = '0026'
down_revision = '0025'
branch_labels = None
depends_on = None

# The function as this release made it (a migration keeps its own copy: the code moves on).
TAKE_EARLY_STATUSES = """CREATE OR REPLACE FUNCTION take_early_statuses(p_sid text, p_lock_key bigint) RETURNS jsonb
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    v_reports jsonb;
BEGIN
    PERFORM pg_advisory_xact_lock(p_lock_key);
    WITH taken AS (
        DELETE FROM early_statuses e WHERE e.sid = p_sid
        RETURNING e.account_sid, e.status, e.num_segments, e.price, e.price_unit, e.error_code, e.error_message)
    SELECT jsonb_agg(to_jsonb(taken)) INTO v_reports FROM taken;
    RETURN v_reports;
END
$$"""


def upgrade() -> None:
    if op.get_bind().dialect.name == 'postgresql':
        op.get_bind().exec_driver_sql(TAKE_EARLY_STATUSES)


def downgrade() -> None:
    if op.get_bind().dialect.name == 'postgresql':
        op.get_bind().exec_driver_sql("DROP FUNCTION IF EXISTS take_early_statuses(text, bigint)")
