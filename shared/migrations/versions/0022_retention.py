"""retention: when a message, a campaign's recipients and an event's data were redacted, and partial indexes over
what is left to redact

Additive only (nullable columns, new indexes), so processes of the release before keep serving while it runs. On
PostgreSQL the indexes are built CONCURRENTLY, outside the migration's transaction, as in 0014: `messages` is the
largest table and the hot path writes it without pause.

Revision ID: 0022
Revises: 0020
"""
import sqlalchemy as sa
from alembic import op

revision = '0022'
down_revision = '0020'
branch_labels = None
depends_on = None

UNREDACTED = "redacted_at IS NULL"
INDEXES = [  # name, table, column
    ('ix_messages_unredacted_created_at', 'messages', 'created_at'),  # never updated: status changes stay HOT
    ('ix_webhook_events_unredacted_created_at', 'webhook_events', 'created_at'),
]


def upgrade() -> None:
    for table in ('messages', 'campaigns', 'webhook_events'):
        with op.batch_alter_table(table) as batch:
            batch.add_column(sa.Column('redacted_at', sa.DateTime(timezone=True), nullable=True))
    if op.get_bind().dialect.name == 'postgresql':
        with op.get_context().autocommit_block():
            for name, table, column in INDEXES:
                invalid = op.get_bind().scalar(sa.text(
                    "SELECT NOT indisvalid FROM pg_index WHERE indexrelid = to_regclass(:name)"), {"name": name})
                if invalid:
                    op.drop_index(name, table_name=table, postgresql_concurrently=True)
                op.create_index(name, table, [column], unique=False, postgresql_concurrently=True, if_not_exists=True,
                                postgresql_where=sa.text(UNREDACTED))
        return
    for name, table, column in INDEXES:
        op.create_index(name, table, [column], unique=False, sqlite_where=sa.text(UNREDACTED))


def downgrade() -> None:
    for name, table, _column in INDEXES:
        op.drop_index(name, table_name=table)
    for table in ('webhook_events', 'campaigns', 'messages'):
        with op.batch_alter_table(table) as batch:
            batch.drop_column('redacted_at')
