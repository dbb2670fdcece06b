"""account quiet hours: the window automated texts keep to, and whether single sends keep to it too

Revision ID: 0007
Revises: 0006
"""
import sqlalchemy as sa
from alembic import op

revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('accounts') as batch:
        batch.add_column(sa.Column('quiet_start', sa.String(length=5), nullable=True))
        batch.add_column(sa.Column('quiet_end', sa.String(length=5), nullable=True))
        batch.add_column(sa.Column('quiet_hours_scope', sa.String(length=16), server_default='automated',
                                   nullable=False))


def downgrade() -> None:
    with op.batch_alter_table('accounts') as batch:
        batch.drop_column('quiet_hours_scope')
        batch.drop_column('quiet_end')
        batch.drop_column('quiet_start')
