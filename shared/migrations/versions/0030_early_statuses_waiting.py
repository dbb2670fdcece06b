"""early_statuses_waiting: the send step stores a sid as one statement of its own when no report beat it

Storing a sid was a transaction of three round trips (BEGIN, the UPDATE that takes the reports that beat the sid,
COMMIT), though nearly always no report had. This PL/pgSQL function takes the sid's lock and answers whether any
report waits, leaving them where they are: the UPDATE that stores the sid alone, in autocommit, is conditioned on
none waiting, and the rare store that finds some goes the transactional way, which takes and applies them. Its
EXISTS, a statement of a VOLATILE function, takes its snapshot after the lock, so it sees what a report's
transaction committed while the caller waited for it. Only the code of this release calls it.

Revision ID: 0030
Revises: 0029
"""
from alembic import op

revision = '0030'
down_revision = '0029'
branch_labels = None
depends_on = None

# The function as this release made it (a migration keeps its own copy: the code moves on).
EARLY_STATUSES_WAITING = """CREATE OR REPLACE FUNCTION early_statuses_waiting(p_sid text, p_lock_key bigint)
RETURNS boolean LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(p_lock_key);
    RETURN EXISTS (SELECT 1 FROM early_statuses e WHERE e.sid = p_sid);
END
$$"""


def upgrade() -> None:
    if op.get_bind().dialect.name == 'postgresql':
        op.get_bind().exec_driver_sql(EARLY_STATUSES_WAITING)


def downgrade() -> None:
    if op.get_bind().dialect.name == 'postgresql':
        op.get_bind().exec_driver_sql("DROP FUNCTION IF EXISTS early_statuses_waiting(text, bigint)")
