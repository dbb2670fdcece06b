"""ledger functions: reserve and settle in PL/pgSQL on PostgreSQL (shared/ledger/plpgsql.py)

Revision ID: 0002
Revises: 0001
"""
from alembic import op

from shared.ledger.plpgsql import install

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name == 'postgresql':
        install(op.get_bind())


def downgrade() -> None:
    if op.get_bind().dialect.name == 'postgresql':
        op.execute('DROP FUNCTION IF EXISTS ledger_settle(bigint, text, bigint, bigint, text, text, timestamptz, text)')
        op.execute('DROP FUNCTION IF EXISTS ledger_burn(text, text, bigint)')
        op.execute('DROP FUNCTION IF EXISTS ledger_reserve(text, text, bigint, text, text, timestamptz, timestamptz)')
