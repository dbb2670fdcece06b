"""events for integrators: webhook endpoints and their subscriptions, the event outbox, deliveries; campaigns
record when they were found completed

Revision ID: 0015
Revises: 0012
"""
import sqlalchemy as sa
from alembic import op

revision = '0015'
down_revision = '0014'
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
Instant = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        'webhook_endpoints',
        sa.Column('id', sa.String(length=40), nullable=False),
        sa.Column('account_id', sa.String(length=40), nullable=False),
        sa.Column('url', sa.String(length=2000), nullable=False),
        sa.Column('description', sa.String(length=200), nullable=True),
        sa.Column('secret', sa.Text(), nullable=False),
        sa.Column('enabled', sa.Boolean(), nullable=False),
        sa.Column('disabled_reason', sa.String(length=500), nullable=True),
        sa.Column('last_success_at', Instant, nullable=True),
        sa.Column('created_at', Instant, nullable=False),
        sa.Column('updated_at', Instant, nullable=False),
        sa.Column('deleted_at', Instant, nullable=True),
        sa.ForeignKeyConstraint(['account_id'], ['accounts.id'], name=op.f('fk_webhook_endpoints_account_id_accounts')),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_webhook_endpoints')),
    )
    op.create_index(op.f('ix_webhook_endpoints_account_id'), 'webhook_endpoints', ['account_id'], unique=False)
    op.create_table(
        'webhook_subscriptions',
        sa.Column('id', BigId, autoincrement=True, nullable=False),
        sa.Column('endpoint_id', sa.String(length=40), nullable=False),
        sa.Column('account_id', sa.String(length=40), nullable=False),
        sa.Column('event_type', sa.String(length=40), nullable=False),
        sa.ForeignKeyConstraint(['account_id'], ['accounts.id'],
                                name=op.f('fk_webhook_subscriptions_account_id_accounts')),
        sa.ForeignKeyConstraint(['endpoint_id'], ['webhook_endpoints.id'],
                                name=op.f('fk_webhook_subscriptions_endpoint_id_webhook_endpoints')),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_webhook_subscriptions')),
        sa.UniqueConstraint('endpoint_id', 'event_type', name=op.f('uq_webhook_subscriptions_endpoint_id')),
    )
    op.create_index('ix_webhook_subscriptions_account_id_event_type', 'webhook_subscriptions',
                    ['account_id', 'event_type'], unique=False)
    op.create_table(
        'webhook_events',
        sa.Column('id', sa.String(length=40), nullable=False),
        sa.Column('account_id', sa.String(length=40), nullable=False),
        sa.Column('type', sa.String(length=40), nullable=False),
        sa.Column('key', sa.String(length=200), nullable=False),
        sa.Column('data', sa.JSON(), nullable=False),
        sa.Column('created_at', Instant, nullable=False),
        sa.Column('dispatched_at', Instant, nullable=True),
        sa.ForeignKeyConstraint(['account_id'], ['accounts.id'], name=op.f('fk_webhook_events_account_id_accounts')),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_webhook_events')),
        sa.UniqueConstraint('key', name=op.f('uq_webhook_events_key')),
    )
    op.create_index('ix_webhook_events_account_id_type', 'webhook_events', ['account_id', 'type'], unique=False)
    op.create_index('ix_webhook_events_dispatched_at_created_at', 'webhook_events', ['dispatched_at', 'created_at'],
                    unique=False)
    op.create_table(
        'webhook_deliveries',
        sa.Column('id', sa.String(length=40), nullable=False),
        sa.Column('event_id', sa.String(length=40), nullable=False),
        sa.Column('endpoint_id', sa.String(length=40), nullable=False),
        sa.Column('status', sa.String(length=16), nullable=False),
        sa.Column('attempts', sa.Integer(), nullable=False),
        sa.Column('next_attempt_at', Instant, nullable=True),
        sa.Column('retry_until', Instant, nullable=False),
        sa.Column('last_attempt_at', Instant, nullable=True),
        sa.Column('response_status', sa.Integer(), nullable=True),
        sa.Column('error', sa.String(length=500), nullable=True),
        sa.Column('created_at', Instant, nullable=False),
        sa.Column('updated_at', Instant, nullable=False),
        sa.ForeignKeyConstraint(['endpoint_id'], ['webhook_endpoints.id'],
                                name=op.f('fk_webhook_deliveries_endpoint_id_webhook_endpoints')),
        sa.ForeignKeyConstraint(['event_id'], ['webhook_events.id'],
                                name=op.f('fk_webhook_deliveries_event_id_webhook_events')),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_webhook_deliveries')),
        sa.UniqueConstraint('event_id', 'endpoint_id', name=op.f('uq_webhook_deliveries_event_id')),
    )
    op.create_index('ix_webhook_deliveries_endpoint_id_id', 'webhook_deliveries', ['endpoint_id', 'id'], unique=False)
    op.create_index('ix_webhook_deliveries_status_next_attempt_at', 'webhook_deliveries',
                    ['status', 'next_attempt_at'], unique=False)
    with op.batch_alter_table('campaigns') as batch:
        batch.add_column(sa.Column('completed_at', Instant, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('campaigns') as batch:
        batch.drop_column('completed_at')
    op.drop_table('webhook_deliveries')
    op.drop_table('webhook_events')
    op.drop_table('webhook_subscriptions')
    op.drop_table('webhook_endpoints')
