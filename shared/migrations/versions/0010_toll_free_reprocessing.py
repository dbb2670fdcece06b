"""toll-free reprocessing: the account's setting, and the link from a resend to the original it resends

Revision ID: 0010
Revises: 0009
"""
import sqlalchemy as sa
from alembic import op

revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('accounts') as batch:
        batch.add_column(sa.Column('toll_free_reprocessing', sa.Boolean(), server_default=sa.false(),
                                   nullable=False))
    with op.batch_alter_table('messages') as batch:
        batch.add_column(sa.Column('reprocessed_from', sa.String(length=40), nullable=True))
        batch.create_unique_constraint('uq_messages_reprocessed_from', ['reprocessed_from'])
        batch.create_foreign_key('fk_messages_reprocessed_from_messages', 'messages', ['reprocessed_from'], ['id'])


def downgrade() -> None:
    with op.batch_alter_table('messages') as batch:
        batch.drop_constraint('fk_messages_reprocessed_from_messages', type_='foreignkey')
        batch.drop_constraint('uq_messages_reprocessed_from', type_='unique')
        batch.drop_column('reprocessed_from')
    with op.batch_alter_table('accounts') as batch:
        batch.drop_column('toll_free_reprocessing')
