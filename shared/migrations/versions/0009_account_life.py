"""account life: cancel, reactivate, mark spam; cycles anchored at the last reactivation; an event per change

Revision ID: 0009
Revises: 0008
"""
import sqlalchemy as sa
from alembic import op

revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('accounts') as batch:
        batch.add_column(sa.Column('cycle_anchor_at', sa.DateTime(timezone=True),
                                   server_default=sa.text('(CURRENT_TIMESTAMP)'), nullable=False))
        batch.add_column(sa.Column('canceled_at', sa.DateTime(timezone=True), nullable=True))
    op.execute('UPDATE accounts SET cycle_anchor_at = created_at')  # cycles have counted from the creation so far
    with op.batch_alter_table('phone_numbers') as batch:
        batch.add_column(sa.Column('released_at', sa.DateTime(timezone=True), nullable=True))
    op.create_table('account_events',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('account_id', sa.String(length=40), nullable=False),
    sa.Column('at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('action', sa.String(length=32), nullable=False),
    sa.Column('actor', sa.String(length=60), nullable=False),
    sa.Column('detail', sa.JSON(), nullable=False),
    sa.ForeignKeyConstraint(['account_id'], ['accounts.id'], name=op.f('fk_account_events_account_id_accounts')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_account_events'))
    )
    op.create_index('ix_account_events_account_id_id', 'account_events', ['account_id', 'id'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_account_events_account_id_id', table_name='account_events')
    op.drop_table('account_events')
    with op.batch_alter_table('phone_numbers') as batch:
        batch.drop_column('released_at')
    with op.batch_alter_table('accounts') as batch:
        batch.drop_column('canceled_at')
        batch.drop_column('cycle_anchor_at')
