"""site dunning: dunning sites belong to an account (or, with none, to creditq itself), customers' runs, per-site
opt-outs, and messages that name the site whose number and credentials send them

The sites stored so far were global, set by the operator for creditq's own dunning: they become its built-in
sites (no account), keyed by a new id.

Revision ID: 0020
Revises: 0019
"""
import sqlalchemy as sa
from alembic import op

revision = '0020'
down_revision = '0019'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('dunning_integrations') as batch:
        batch.add_column(sa.Column('id', sa.String(length=40), nullable=True))
        batch.add_column(sa.Column('account_id', sa.String(length=40), nullable=True))
        batch.add_column(sa.Column('help_text', sa.String(length=320), nullable=True))
    op.execute("UPDATE dunning_integrations SET id = 'site_builtin_' || site")
    with op.batch_alter_table('dunning_integrations') as batch:
        batch.alter_column('id', existing_type=sa.String(length=40), nullable=False)
        batch.drop_constraint('pk_dunning_integrations', type_='primary')
        batch.create_primary_key('pk_dunning_integrations', ['id'])
        batch.create_foreign_key(batch.f('fk_dunning_integrations_account_id_accounts'), 'accounts',
                                 ['account_id'], ['id'])
        batch.create_unique_constraint(batch.f('uq_dunning_integrations_account_id'), ['account_id', 'site'])
        batch.create_index(batch.f('ix_dunning_integrations_from_number'), ['from_number'], unique=False)
    op.create_table(
        'dunning_site_opt_outs',
        sa.Column('site_id', sa.String(length=40), nullable=False),
        sa.Column('phone', sa.String(length=20), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(['site_id'], ['dunning_integrations.id'],
                                name=op.f('fk_dunning_site_opt_outs_site_id_dunning_integrations')),
        sa.PrimaryKeyConstraint('site_id', 'phone', name=op.f('pk_dunning_site_opt_outs')),
    )
    with op.batch_alter_table('dunning_runs') as batch:
        batch.add_column(sa.Column('customer', sa.JSON(), nullable=True))
        batch.add_column(sa.Column('open_customer_key', sa.String(length=200), nullable=True))
        batch.create_unique_constraint(batch.f('uq_dunning_runs_open_customer_key'), ['open_customer_key'])
    with op.batch_alter_table('dunning_steps') as batch:
        batch.add_column(sa.Column('sms_message_id', sa.String(length=40), nullable=True))
    with op.batch_alter_table('messages') as batch:
        batch.add_column(sa.Column('dunning_site_id', sa.String(length=40), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('messages') as batch:
        batch.drop_column('dunning_site_id')
    with op.batch_alter_table('dunning_steps') as batch:
        batch.drop_column('sms_message_id')
    with op.batch_alter_table('dunning_runs') as batch:
        batch.drop_constraint(batch.f('uq_dunning_runs_open_customer_key'), type_='unique')
        batch.drop_column('open_customer_key')
        batch.drop_column('customer')
    op.drop_table('dunning_site_opt_outs')
    op.execute("DELETE FROM dunning_integrations WHERE account_id IS NOT NULL")
    with op.batch_alter_table('dunning_integrations') as batch:
        batch.drop_index(batch.f('ix_dunning_integrations_from_number'))
        batch.drop_constraint(batch.f('uq_dunning_integrations_account_id'), type_='unique')
        batch.drop_constraint(batch.f('fk_dunning_integrations_account_id_accounts'), type_='foreignkey')
        batch.drop_constraint('pk_dunning_integrations', type_='primary')
        batch.create_primary_key('pk_dunning_integrations', ['site'])
        batch.drop_column('help_text')
        batch.drop_column('account_id')
        batch.drop_column('id')
