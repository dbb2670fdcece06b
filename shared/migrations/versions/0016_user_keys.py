"""users act as themselves: an API key may belong to a user (its sends are charged to that user's credits) and a
campaign records the user it draws on; a user's own credits pay a whole settlement, below zero if need be
(ledger_settle replaced: the overrun no longer spills into the pool)

Revision ID: 0016
Revises: 0012
"""
import sqlalchemy as sa
from alembic import op

from shared.ledger.plpgsql import install

revision = '0016'
down_revision = '0015'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('api_keys') as batch:
        batch.add_column(sa.Column('user_id', sa.String(length=40), nullable=True))
        batch.create_foreign_key('fk_api_keys_user_id_users', 'users', ['user_id'], ['id'])
    with op.batch_alter_table('campaigns') as batch:
        batch.add_column(sa.Column('user_id', sa.String(length=40), nullable=True))
        batch.create_foreign_key('fk_campaigns_user_id_users', 'users', ['user_id'], ['id'])
    install(op.get_bind())  # CREATE OR REPLACE: the same signatures, the new settle body


def downgrade() -> None:
    with op.batch_alter_table('campaigns') as batch:
        batch.drop_constraint('fk_campaigns_user_id_users', type_='foreignkey')
        batch.drop_column('user_id')
    with op.batch_alter_table('api_keys') as batch:
        batch.drop_constraint('fk_api_keys_user_id_users', type_='foreignkey')
        batch.drop_column('user_id')
