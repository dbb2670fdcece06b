"""lean message writes: the indexes of a campaign's, a user's messages and of resends hold only the rows that have
one; no foreign keys from messages and holds to accounts, nor from messages to holds

Every insert and every status update of a message wrote an entry into each of its indexes, those of the columns
most texts leave empty included. And every message and hold inserted checked its account's row with a share lock:
the row the sends are updating, so each check made a multixact of their locks (a 100,000-recipient campaign spent
about a third of its PostgreSQL time on them). Holds are made only by the ledger's reservation, whose conditional
UPDATE of the account's row is its own check; a message's account is the one its request was authenticated for, or
its campaign's; accounts are never deleted. `shared.ledger.verify` reports a hold or message naming no account,
and a message naming a hold that does not exist.

On PostgreSQL the new indexes are built CONCURRENTLY (as in 0014) before the ones they replace are dropped, so
listing a campaign's messages never goes without one. Dropping a constraint locks its table, and a foreign key's
the table it names too, outright: each is dropped alone, waiting at most LOCK_TIMEOUT for those locks and tried
again after a pause, so a long transaction on `accounts` (a report, a month-end batch) never holds the sends queued
behind a waiting ALTER for longer than that. The release before runs alike on either schema.

Revision ID: 0025
Revises: 0024
"""
import time

import sqlalchemy as sa
from alembic import op

revision = '0025'
down_revision = '0024'
branch_labels = None
depends_on = None

INDEXES = [  # name, columns, unique, predicate: the rows that have the value
    ('ix_messages_in_campaign_created', ['campaign_id', 'created_at', 'id'], False, 'campaign_id IS NOT NULL'),
    ('ix_messages_by_user_created', ['user_id', 'created_at', 'id'], False, 'user_id IS NOT NULL'),
    ('ix_messages_reprocessed_from', ['reprocessed_from'], True, 'reprocessed_from IS NOT NULL'),
]
REPLACED_INDEXES = [('ix_messages_campaign_created', ['campaign_id', 'created_at', 'id']),
                    ('ix_messages_user_created', ['user_id', 'created_at', 'id'])]
REPLACED_UNIQUE = ('uq_messages_reprocessed_from', ['reprocessed_from'])
LOCK_TIMEOUT_MS = 500
ATTEMPTS = 600  # about ten minutes of a transaction that keeps a table busy, then the upgrade gives up
LOCK_NOT_AVAILABLE = '55P03'
FOREIGN_KEYS = [  # table, name, column, referred table
    ('messages', 'fk_messages_account_id_accounts', 'account_id', 'accounts'),
    ('messages', 'fk_messages_hold_id_holds', 'hold_id', 'holds'),
    ('holds', 'fk_holds_account_id_accounts', 'account_id', 'accounts'),
]


def upgrade() -> None:
    if op.get_bind().dialect.name == 'postgresql':
        with op.get_context().autocommit_block():
            for name, columns, unique, where in INDEXES:
                invalid = op.get_bind().scalar(sa.text(
                    "SELECT NOT indisvalid FROM pg_index WHERE indexrelid = to_regclass(:name)"), {"name": name})
                if invalid:
                    op.drop_index(name, table_name='messages', postgresql_concurrently=True)
                op.create_index(name, 'messages', columns, unique=unique, postgresql_concurrently=True,
                                if_not_exists=True, postgresql_where=sa.text(where))
            for name, _columns in REPLACED_INDEXES:
                op.drop_index(name, table_name='messages', postgresql_concurrently=True, if_exists=True)
            _drop_briefly([('messages', REPLACED_UNIQUE[0]), *((table, name) for table, name, *_ in FOREIGN_KEYS)])
        return
    with op.batch_alter_table('holds') as batch:
        batch.drop_constraint('fk_holds_account_id_accounts', type_='foreignkey')
    with op.batch_alter_table('messages') as batch:
        for table, name, _column, _referred in FOREIGN_KEYS:
            if table == 'messages':
                batch.drop_constraint(name, type_='foreignkey')
        batch.drop_constraint(REPLACED_UNIQUE[0], type_='unique')
        for name, _columns in REPLACED_INDEXES:
            batch.drop_index(name)
    for name, columns, unique, where in INDEXES:
        op.create_index(name, 'messages', columns, unique=unique, sqlite_where=sa.text(where))


def _drop_briefly(constraints: list[tuple[str, str]]) -> None:
    """Each constraint in a transaction of its own (the caller's autocommit block), waiting at most LOCK_TIMEOUT_MS
    for its locks; a wait that times out gives them back and tries again."""
    bind = op.get_bind()
    bind.exec_driver_sql(f"SET lock_timeout = {LOCK_TIMEOUT_MS}")
    try:
        for table, name in constraints:
            for attempt in range(ATTEMPTS):
                try:
                    bind.exec_driver_sql(f'ALTER TABLE {table} DROP CONSTRAINT IF EXISTS "{name}"')
                    break
                except sa.exc.OperationalError as error:
                    if getattr(error.orig, 'sqlstate', None) != LOCK_NOT_AVAILABLE or attempt == ATTEMPTS - 1:
                        raise
                    time.sleep(LOCK_TIMEOUT_MS / 1000)
    finally:
        bind.exec_driver_sql("RESET lock_timeout")


def downgrade() -> None:
    for name, _columns, _unique, _where in reversed(INDEXES):
        op.drop_index(name, table_name='messages')
    with op.batch_alter_table('messages') as batch:
        for name, columns in REPLACED_INDEXES:
            batch.create_index(name, columns, unique=False)
        batch.create_unique_constraint(REPLACED_UNIQUE[0], REPLACED_UNIQUE[1])
        for table, name, column, referred in FOREIGN_KEYS:
            if table == 'messages':
                batch.create_foreign_key(name, referred, [column], ['id'])
    with op.batch_alter_table('holds') as batch:
        batch.create_foreign_key('fk_holds_account_id_accounts', 'accounts', ['account_id'], ['id'])
