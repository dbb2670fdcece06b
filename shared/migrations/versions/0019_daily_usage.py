"""daily usage: what each account and user spent per local day and kind, folded from the entries after they
are written, and the marker of how far the fold got

Revision ID: 0019
Revises: 0017
"""
import sqlalchemy as sa
from alembic import op

revision = '0019'
down_revision = '0017'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'daily_usage',
        sa.Column('account_id', sa.String(length=40), nullable=False),
        sa.Column('day', sa.Date(), nullable=False),
        sa.Column('user_id', sa.String(length=40), nullable=False),
        sa.Column('kind', sa.String(length=16), nullable=False),
        sa.Column('millicredits', sa.BigInteger(), nullable=False),
        sa.Column('count', sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(['account_id'], ['accounts.id'], name=op.f('fk_daily_usage_account_id_accounts')),
        sa.PrimaryKeyConstraint('account_id', 'day', 'user_id', 'kind', name=op.f('pk_daily_usage')),
    )
    op.create_table(
        'daily_usage_folds',
        sa.Column('id', sa.Integer(), autoincrement=False, nullable=False),
        sa.Column('folded_through', sa.BigInteger(), nullable=False),
        sa.Column('horizon_id', sa.BigInteger(), nullable=False),
        sa.Column('horizon_xid', sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_daily_usage_folds')),
    )


def downgrade() -> None:
    op.drop_table('daily_usage_folds')
    op.drop_table('daily_usage')
