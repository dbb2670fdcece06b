"""callback owners: each message records the Twilio account it was sent with; a number has one owner

Revision ID: 0003
Revises: 0002

- messages.twilio_account_sid: the (sub)account a message was sent with; its callbacks must name it.
- early_statuses.account_sid: the account whose token verified a report that beat its sid. Reports kept
  before this revision were never tied to an account, so they are dropped (logged): the sweeper
  reconciles their messages with Twilio when their holds expire.
- accounts.twilio_account_sid gets an index: early reports are checked against the tokens of the
  AccountSid they name.
- phone_numbers.phone becomes unique (it was unique per account only). Where several accounts claimed
  one number, the earliest claim keeps it and the later ones are released (deleted), each logged, in
  the same transaction as the new constraint, so the upgrade never stops half-way.
"""
import logging

import sqlalchemy as sa
from alembic import op

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None

log = logging.getLogger(__name__)


def upgrade() -> None:
    _release_shared_numbers()
    with op.batch_alter_table('phone_numbers', schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f('uq_phone_numbers_account_id'), type_='unique')
        batch_op.create_unique_constraint(batch_op.f('uq_phone_numbers_phone'), ['phone'])

    dropped = op.get_bind().execute(sa.text('DELETE FROM early_statuses')).rowcount
    if dropped:
        log.warning('dropped %d early status reports kept before callbacks were tied to an account; the sweeper '
                    'reconciles their messages with Twilio', dropped)
    with op.batch_alter_table('early_statuses', schema=None) as batch_op:
        batch_op.add_column(sa.Column('account_sid', sa.String(length=34), nullable=False))

    with op.batch_alter_table('messages', schema=None) as batch_op:
        batch_op.add_column(sa.Column('twilio_account_sid', sa.String(length=34), nullable=True))

    with op.batch_alter_table('accounts', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_accounts_twilio_account_sid'), ['twilio_account_sid'], unique=False)


def _release_shared_numbers() -> None:
    """Keep each number with its earliest claim (lowest id); delete and log every later claim of it."""
    bind = op.get_bind()
    later_claims = bind.execute(sa.text(
        'SELECT id, account_id, phone FROM phone_numbers AS claim WHERE EXISTS '
        '(SELECT 1 FROM phone_numbers AS earlier WHERE earlier.phone = claim.phone AND earlier.id < claim.id) '
        'ORDER BY phone, id'
    )).all()
    for claim in later_claims:
        log.warning('released number %s from account %s (phone_numbers.id %s): an earlier claim of another '
                    'account keeps it', claim.phone, claim.account_id, claim.id)
        bind.execute(sa.text('DELETE FROM phone_numbers WHERE id = :id'), {'id': claim.id})


def downgrade() -> None:
    """The released numbers are not given back: add them again through the API if they are still wanted."""
    with op.batch_alter_table('accounts', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_accounts_twilio_account_sid'))

    with op.batch_alter_table('messages', schema=None) as batch_op:
        batch_op.drop_column('twilio_account_sid')

    with op.batch_alter_table('early_statuses', schema=None) as batch_op:
        batch_op.drop_column('account_sid')

    with op.batch_alter_table('phone_numbers', schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f('uq_phone_numbers_phone'), type_='unique')
        batch_op.create_unique_constraint(batch_op.f('uq_phone_numbers_account_id'), ['account_id', 'phone'])
