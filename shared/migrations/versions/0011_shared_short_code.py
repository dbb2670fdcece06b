"""shared short code: an account's keyword on the deployment's shared code, and who last texted a phone from it

Revision ID: 0011
Revises: 0010
"""
import sqlalchemy as sa
from alembic import op

revision = '0011'
down_revision = '0010'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('accounts') as batch:
        batch.add_column(sa.Column('shared_short_code', sa.String(length=6), nullable=True))
        batch.add_column(sa.Column('shared_short_code_keyword', sa.String(length=15), nullable=True))
        batch.create_unique_constraint(batch.f('uq_accounts_shared_short_code_keyword'), ['shared_short_code_keyword'])
    with op.batch_alter_table('messages') as batch:
        batch.create_index(batch.f('ix_messages_to_from'), ['to', 'from', 'created_at'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('messages') as batch:
        batch.drop_index(batch.f('ix_messages_to_from'))
    with op.batch_alter_table('accounts') as batch:
        batch.drop_constraint(batch.f('uq_accounts_shared_short_code_keyword'), type_='unique')
        batch.drop_column('shared_short_code_keyword')
        batch.drop_column('shared_short_code')
