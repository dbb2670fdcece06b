"""payments by dunning run: a run's payment in play is looked up by its run

A dunning step and a new card's retry both ask whether the run already has a payment whose outcome is unknown or
that succeeded (shared.billing.purchases.in_play) before opening one: without an index on `dunning_run_id` that was
a scan of every payment, at every step.

On PostgreSQL the index is built CONCURRENTLY (an earlier try's invalid one dropped first), so payments are never
blocked; the release before runs alike with or without it.

Revision ID: 0029
Revises: 0028
"""
import sqlalchemy as sa
from alembic import op

revision = '0029'
down_revision = '0028'
branch_labels = None
depends_on = None

NAME = 'ix_payments_dunning_run_id'


def upgrade() -> None:
    if op.get_bind().dialect.name == 'postgresql':
        with op.get_context().autocommit_block():
            invalid = op.get_bind().scalar(sa.text(
                "SELECT NOT indisvalid FROM pg_index WHERE indexrelid = to_regclass(:name)"), {"name": NAME})
            if invalid:  # a concurrent build an earlier try left unfinished
                op.drop_index(NAME, table_name='payments', postgresql_concurrently=True)
            op.create_index(NAME, 'payments', ['dunning_run_id'], postgresql_concurrently=True, if_not_exists=True)
        return
    op.create_index(NAME, 'payments', ['dunning_run_id'])


def downgrade() -> None:
    op.drop_index(NAME, table_name='payments')
