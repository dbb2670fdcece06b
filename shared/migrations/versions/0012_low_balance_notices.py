"""low-balance notices: the emails a settlement that left a wallet under its threshold owes, one per user per
local day; they replace the day claimed on the user row (`users.low_balance_notified_on`)

Revision ID: 0012
Revises: 0011
"""
import sqlalchemy as sa
from alembic import op

revision = '0012'
down_revision = '0011'
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        'low_balance_notices',
        sa.Column('id', BigId, autoincrement=True, nullable=False),
        sa.Column('account_id', sa.String(length=40), nullable=False),
        sa.Column('user_id', sa.String(length=40), nullable=False),
        sa.Column('day', sa.String(length=10), nullable=False),
        sa.Column('message_id', sa.String(length=40), nullable=False),
        sa.Column('pool', sa.Boolean(), nullable=False),
        sa.Column('available', sa.BigInteger(), nullable=False),
        sa.Column('threshold', sa.BigInteger(), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('claimed_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('sent_at', sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(['account_id'], ['accounts.id'], name=op.f('fk_low_balance_notices_account_id_accounts')),
        sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_low_balance_notices_user_id_users')),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_low_balance_notices')),
        sa.UniqueConstraint('user_id', 'day', name=op.f('uq_low_balance_notices_user_id')),
    )
    with op.batch_alter_table('low_balance_notices') as batch:
        batch.create_index(batch.f('ix_low_balance_notices_message_id'), ['message_id'], unique=False)
        batch.create_index(batch.f('ix_low_balance_notices_sent_at'), ['sent_at'], unique=False)
    with op.batch_alter_table('users') as batch:
        batch.drop_column('low_balance_notified_on')


def downgrade() -> None:
    with op.batch_alter_table('users') as batch:
        batch.add_column(sa.Column('low_balance_notified_on', sa.String(length=10), nullable=True))
    op.drop_table('low_balance_notices')
