"""list indexes: one behind each filter of GET /v1/messages (status, from, created range, campaign, user; the
inbound replies in a partial index) and the pages of a campaign's recipients

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
    ('ix_messages_campaign_id_id', 'messages', ['campaign_id', 'id'], None),
    ('ix_messages_account_id_status_id', 'messages', ['account_id', 'status', 'id'], None),
    ('ix_messages_account_id_from_id', 'messages', ['account_id', 'from', 'id'], None),
    ('ix_messages_account_id_created_at', 'messages', ['account_id', 'created_at'], None),
    ('ix_messages_user_id_id', 'messages', ['user_id', 'id'], None),
    ('ix_messages_inbound', 'messages', ['account_id', 'id'], INBOUND),
    ('ix_campaign_recipients_campaign_id_id', 'campaign_recipients', ['campaign_id', 'id'], None),
]
REPLACED = ('ix_messages_campaign_id', 'messages', ['campaign_id'])  # ix_messages_campaign_id_id serves it


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
            op.drop_index(REPLACED[0], table_name=REPLACED[1], postgresql_concurrently=True, if_exists=True)
        return
    with op.batch_alter_table('messages') as batch:
        batch.drop_index(REPLACED[0])
    for name, table, columns, where in INDEXES:
        op.create_index(name, table, columns, unique=False, sqlite_where=sa.text(where) if where else None)


def downgrade() -> None:
    op.create_index(REPLACED[0], REPLACED[1], REPLACED[2], unique=False)
    for name, table, _columns, _where in reversed(INDEXES):
        op.drop_index(name, table_name=table)
