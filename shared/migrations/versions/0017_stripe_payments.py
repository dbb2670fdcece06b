"""Stripe payments: each payment's PaymentIntent, 3-D Secure link, refunds and credits taken back; each
account's Customer; the webhook events already handled

Revision ID: 0017
Revises: 0012
"""
import sqlalchemy as sa
from alembic import op

revision = '0017'
down_revision = '0016'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('payments') as batch:
        batch.add_column(sa.Column('intent_id', sa.String(length=100), nullable=True))
        batch.add_column(sa.Column('action_url', sa.String(length=500), nullable=True))
        batch.add_column(sa.Column('refunded_cents', sa.BigInteger(), server_default='0', nullable=False))
        batch.add_column(sa.Column('clawed_back', sa.BigInteger(), server_default='0', nullable=False))
        batch.create_index(batch.f('ix_payments_intent_id'), ['intent_id'], unique=False)
    op.create_table(
        'billing_customers',
        sa.Column('account_id', sa.String(length=40), nullable=False),
        sa.Column('customer_id', sa.String(length=100), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(['account_id'], ['accounts.id'], name=op.f('fk_billing_customers_account_id_accounts')),
        sa.PrimaryKeyConstraint('account_id', name=op.f('pk_billing_customers')),
        sa.UniqueConstraint('customer_id', name=op.f('uq_billing_customers_customer_id')),
    )
    op.create_table(
        'gateway_events',
        sa.Column('id', sa.String(length=100), nullable=False),
        sa.Column('type', sa.String(length=64), nullable=False),
        sa.Column('received_at', sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_gateway_events')),
    )


def downgrade() -> None:
    op.drop_table('gateway_events')
    op.drop_table('billing_customers')
    with op.batch_alter_table('payments') as batch:
        batch.drop_index(batch.f('ix_payments_intent_id'))
        batch.drop_column('clawed_back')
        batch.drop_column('refunded_cents')
        batch.drop_column('action_url')
        batch.drop_column('intent_id')
