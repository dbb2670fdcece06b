"""lean hold writes: holds.reference is not indexed

Every reservation wrote an entry into the hold's reference index, and every settlement, void or expiry another (the
status changes, so no update of a hold is HOT). Nothing looks a hold up by its reference: the ledger's check joins on
it over the whole table. PostgreSQL's time per call of ledger_reserve and ledger_settle fell by about a tenth.

A partial index of the pending holds for the expiry sweep, which a resolved hold would not have written into, was
tried and is not here: PostgreSQL then served the settlement's `WHERE id = ? AND status = 'pending'` by scanning that
index, which it takes to be small, instead of the primary key (twice the time per settlement in the ledger bench,
and worse the more dead entries it holds).

On PostgreSQL the index is dropped CONCURRENTLY, so the sends are never blocked; the release before runs alike on
either schema.

Revision ID: 0028
Revises: 0027
"""
from alembic import op

revision = '0028'
down_revision = '0027'
branch_labels = None
depends_on = None

INDEX = 'ix_holds_reference'


def upgrade() -> None:
    if op.get_bind().dialect.name == 'postgresql':
        with op.get_context().autocommit_block():
            op.drop_index(INDEX, table_name='holds', postgresql_concurrently=True, if_exists=True)
        return
    op.drop_index(INDEX, table_name='holds')


def downgrade() -> None:
    op.create_index(INDEX, 'holds', ['reference'])
