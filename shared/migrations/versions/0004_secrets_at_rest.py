"""secrets at rest: Twilio auth tokens and stored answers encrypted under CREDITQ_SECRET_KEY (shared/secrets.py)

The token columns widen to text (a Fernet token is about twice as long as what it hides) and every value
already stored is encrypted in place, in batches, with the deployment key; dunning integrations get the
credential version their broken mark compares instead of the token. Downgrading decrypts them again.

Revision ID: 0004
Revises: 0003
"""
from collections.abc import Callable

import sqlalchemy as sa
from alembic import op

from shared.secrets import decrypt, encrypt

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None

BATCH = 500

# (table, its primary key, the columns to encrypt, their width before this revision, None for text)
SECRETS = (
    ('accounts', ('id',), 'twilio_auth_token', 100),
    ('dunning_integrations', ('site',), 'auth_token', 100),
    ('idempotency_records', ('principal', 'key'), 'body', None),
)


def upgrade() -> None:
    for table, _, column, width in SECRETS:
        if width is not None:
            with op.batch_alter_table(table) as batch:
                batch.alter_column(column, type_=sa.Text(), existing_type=sa.String(length=width))
    with op.batch_alter_table('dunning_integrations') as batch:
        batch.add_column(sa.Column('credential_version', sa.Integer(), nullable=False, server_default='1'))
    with op.batch_alter_table('dunning_integrations') as batch:
        batch.alter_column('credential_version', server_default=None, existing_type=sa.Integer(),
                           existing_nullable=False)
    for table, key, column, _ in SECRETS:
        _rewrite(table, key, column, encrypt)


def downgrade() -> None:
    for table, key, column, _ in SECRETS:
        _rewrite(table, key, column, decrypt)
    with op.batch_alter_table('dunning_integrations') as batch:
        batch.drop_column('credential_version')
    for table, _, column, width in SECRETS:
        if width is not None:
            with op.batch_alter_table(table) as batch:
                batch.alter_column(column, type_=sa.String(length=width), existing_type=sa.Text())


def _rewrite(name: str, key: tuple[str, ...], column: str, change: Callable[[str], str]) -> None:
    """Every non-null value of the column through `change`, walking the primary key a batch at a time."""
    bind = op.get_bind()
    table = sa.table(name, *(sa.column(part, sa.Text()) for part in key), sa.column(column, sa.Text()))
    primary_key = [table.c[part] for part in key]
    last = None
    while True:
        query = (sa.select(*primary_key, table.c[column]).where(table.c[column].is_not(None))
                 .order_by(*primary_key).limit(BATCH))
        if last is not None:
            query = query.where(sa.tuple_(*primary_key) > sa.tuple_(*last))
        rows = bind.execute(query).all()
        for *row_key, value in rows:
            bind.execute(sa.update(table).where(*(part == value_of for part, value_of in zip(primary_key, row_key)))
                         .values({column: change(value)}))
        if len(rows) < BATCH:
            return
        last = tuple(rows[-1][:len(key)])
