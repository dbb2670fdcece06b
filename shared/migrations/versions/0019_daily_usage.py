"""daily usage: what each account and user spent per local day and kind, folded from the entries after they
are written, and the marker of how far the fold got; each campaign step's own estimate (forecasts count the
steps not sent yet), backfilled as the campaign's estimate shared evenly by its steps

Revision ID: 0019
Revises: 0018
"""
import sqlalchemy as sa
from alembic import op

revision = '0019'
down_revision = '0018'
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
    with op.batch_alter_table('campaign_steps') as batch:
        batch.add_column(sa.Column('credits_estimated', sa.BigInteger(), server_default='0', nullable=False))
    op.execute("UPDATE campaign_steps SET credits_estimated = (SELECT campaigns.credits_estimated / "
               "(SELECT count(*) FROM campaign_steps AS siblings WHERE siblings.campaign_id = campaigns.id) "
               "FROM campaigns WHERE campaigns.id = campaign_steps.campaign_id)")


def downgrade() -> None:
    with op.batch_alter_table('campaign_steps') as batch:
        batch.drop_column('credits_estimated')
    op.drop_table('daily_usage_folds')
    op.drop_table('daily_usage')
