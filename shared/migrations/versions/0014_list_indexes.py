"""list indexes: one behind each filter of GET /v1/messages in its order (account or campaign or user, then
created_at and id: status, from, created range; the inbound replies in a partial index) and the pages of a
campaign's recipients

On PostgreSQL they are built CONCURRENTLY, outside the migration's transaction: `messages` is the largest table
and the hot path writes it without pause, so a plain CREATE INDEX would stop every send until it finished.
A build that died half-way leaves an invalid index; it is dropped and built again on the next upgrade.

Revision ID: 0014
Revises: 0012
"""
import sqlalchemy as sa
from alembic import op

revision = '0014'
down_revision = '0012'
branch_labels = None
depends_on = None

INBOUND = "direction = 'inbound'"
INDEXES = [  # name, table, columns, partial index predicate
    ('ix_messages_account_created', 'messages', ['account_id', 'created_at', 'id'], None),
    ('ix_messages_account_status_created', 'messages', ['account_id', 'status', 'created_at', 'id'], None),
    ('ix_messages_account_from_created', 'messages', ['account_id', 'from', 'created_at', 'id'], None),
    ('ix_messages_campaign_created', 'messages', ['campaign_id', 'created_at', 'id'], None),
    ('ix_messages_user_created', 'messages', ['user_id', 'created_at', 'id'], None),
    ('ix_messages_inbound_created', 'messages', ['account_id', 'created_at', 'id'], INBOUND),
    ('ix_campaign_recipients_campaign_id_id', 'campaign_recipients', ['campaign_id', 'id'], None),
]
REPLACED = [  # what the new ones serve as well (led by the same columns), so a send writes two indexes fewer
    ('ix_messages_campaign_id', 'messages', ['campaign_id']),
    ('ix_messages_account_id_id', 'messages', ['account_id', 'id']),
]


def upgrade() -> None:
    if op.get_bind().dialect.name == 'postgresql':
        with op.get_context().autocommit_block():
            for name, table, columns, where in INDEXES:
                invalid = op.get_bind().scalar(sa.text(
                    "SELECT NOT indisvalid FROM pg_index WHERE indexrelid = to_regclass(:name)"), {"name": name})
                if invalid:
                    op.drop_index(name, table_name=table, postgresql_concurrently=True)
                op.create_index(name, table, columns, unique=False, postgresql_concurrently=True, if_not_exists=True,
                                postgresql_where=sa.text(where) if where else None)
            for name, table, _columns in REPLACED:
                op.drop_index(name, table_name=table, postgresql_concurrently=True, if_exists=True)
        return
    with op.batch_alter_table('messages') as batch:
        for name, _table, _columns in REPLACED:
            batch.drop_index(name)
    for name, table, columns, where in INDEXES:
        op.create_index(name, table, columns, unique=False, sqlite_where=sa.text(where) if where else None)


def downgrade() -> None:
    for name, table, columns in REPLACED:
        op.create_index(name, table, columns, unique=False)
    for name, table, _columns, _where in reversed(INDEXES):
        op.drop_index(name, table_name=table)
