"""price versions: rate cards and price lists live in the database, versioned; a settled message names the card's version

Additive only (a new table, nullable columns), so processes of the release before keep serving while it runs.

Revision ID: 0023
Revises: 0022
"""
import sqlalchemy as sa
from alembic import op

revision = '0023'
down_revision = '0022'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'price_versions',
        sa.Column('kind', sa.String(length=16), nullable=False),
        sa.Column('version', sa.Integer(), nullable=False),
        sa.Column('document', sa.Text(), nullable=False),
        sa.Column('digest', sa.String(length=64), nullable=False),
        sa.Column('origin', sa.String(length=16), nullable=False),
        sa.Column('published_at', sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint('kind', 'version', name=op.f('pk_price_versions')),
    )
    with op.batch_alter_table('messages') as batch:
        batch.add_column(sa.Column('rate_card_version', sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('messages') as batch:
        batch.drop_column('rate_card_version')
    op.drop_table('price_versions')
