"""lean hold writes: the sweep's index has the unresolved holds alone; holds.reference is not indexed

A hold's settlement (void, expiry) changes its status, so it wrote an entry into each of the hold's indexes, and the
one the expiry sweep reads was led by the status. That one also let PostgreSQL serve `WHERE id = ? AND status = ?`
(the settlement function's, a void's, a renewal's) by scanning every pending hold's entry, dead ones included,
instead of the primary key whenever it took the pending holds to be few: on a new table, or with statistics taken
before a campaign reserved a hundred thousand holds (in the ledger bench a settlement cost twice the time). The
sweep's index is now on `expires_at` of the holds not resolved yet (`resolved_at IS NULL`, which every resolution
sets): no statement that names a hold by its status can use it, and a resolved hold leaves it. Nothing looks a hold
up by its reference (the ledger's check joins on it over the whole table): that index goes.

On PostgreSQL the new index is built CONCURRENTLY before the ones it replaces are dropped (also CONCURRENTLY), so
the sweep never goes without one and the sends are never blocked; the release before runs alike on either schema
(its sweep's statement, without `resolved_at IS NULL`, reads the holds of the account index or the table meanwhile).

Revision ID: 0028
Revises: 0027
"""
import sqlalchemy as sa
from alembic import op

revision = '0028'
down_revision = '0027'
branch_labels = None
depends_on = None

UNRESOLVED = ('ix_holds_unresolved_expires_at', ['expires_at'], 'resolved_at IS NULL')
REPLACED = [('ix_holds_pending_expiry', ['status', 'expires_at']), ('ix_holds_reference', ['reference'])]


def upgrade() -> None:
    name, columns, where = UNRESOLVED
    if op.get_bind().dialect.name == 'postgresql':
        with op.get_context().autocommit_block():
            invalid = op.get_bind().scalar(sa.text(
                "SELECT NOT indisvalid FROM pg_index WHERE indexrelid = to_regclass(:name)"), {"name": name})
            if invalid:  # a concurrent build an earlier try left unfinished
                op.drop_index(name, table_name='holds', postgresql_concurrently=True)
            op.create_index(name, 'holds', columns, postgresql_concurrently=True, if_not_exists=True,
                            postgresql_where=sa.text(where))
            for replaced, _columns in REPLACED:
                op.drop_index(replaced, table_name='holds', postgresql_concurrently=True, if_exists=True)
        return
    op.create_index(name, 'holds', columns, sqlite_where=sa.text(where))
    for replaced, _columns in REPLACED:
        op.drop_index(replaced, table_name='holds')


def downgrade() -> None:
    for replaced, columns in REPLACED:
        op.create_index(replaced, 'holds', columns)
    op.drop_index(UNRESOLVED[0], table_name='holds')
