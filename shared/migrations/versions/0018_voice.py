"""Voice: calls (outgoing, bridged, broadcast, inbound), voice broadcasts, numbers' forwarding and voicemail, and
each account's default call length and inbound grace

Revision ID: 0018
Revises: 0017
"""
import sqlalchemy as sa
from alembic import op

revision = '0018'
down_revision = '0017'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('accounts') as batch:
        batch.add_column(sa.Column('call_max_minutes', sa.Integer(), server_default='10', nullable=False))
        batch.add_column(sa.Column('inbound_grace_minutes', sa.Integer(), server_default='5', nullable=False))
    with op.batch_alter_table('phone_numbers') as batch:
        batch.add_column(sa.Column('forward_to', sa.String(length=20), nullable=True))
        batch.add_column(sa.Column('voicemail', sa.Boolean(), server_default=sa.false(), nullable=False))
        batch.add_column(sa.Column('transcribe', sa.Boolean(), server_default=sa.false(), nullable=False))
    op.create_table(
        'calls',
        sa.Column('id', sa.String(length=40), nullable=False),
        sa.Column('account_id', sa.String(length=40), nullable=False),
        sa.Column('user_id', sa.String(length=40), nullable=True),
        sa.Column('broadcast_id', sa.String(length=40), nullable=True),
        sa.Column('direction', sa.String(length=8), nullable=False),
        sa.Column('to', sa.String(length=20), nullable=False),
        sa.Column('from', sa.String(length=20), nullable=False),
        sa.Column('say', sa.Text(), nullable=True),
        sa.Column('play_url', sa.String(length=500), nullable=True),
        sa.Column('connect_to', sa.String(length=20), nullable=True),
        sa.Column('machine_detection', sa.Boolean(), nullable=False),
        sa.Column('max_minutes', sa.Integer(), nullable=False),
        sa.Column('minutes_held', sa.Integer(), nullable=True),
        sa.Column('time_limit', sa.Integer(), nullable=True),
        sa.Column('legs', sa.Integer(), nullable=False),
        sa.Column('rate', sa.BigInteger(), nullable=False),
        sa.Column('status', sa.String(length=16), nullable=False),
        sa.Column('skip_reason', sa.String(length=200), nullable=True),
        sa.Column('answered_by', sa.String(length=24), nullable=True),
        sa.Column('duration_seconds', sa.Integer(), nullable=True),
        sa.Column('minutes_billed', sa.Integer(), nullable=True),
        sa.Column('credits_estimated', sa.BigInteger(), nullable=False),
        sa.Column('credits_charged', sa.BigInteger(), nullable=True),
        sa.Column('hold_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
        sa.Column('twilio_sid', sa.String(length=40), nullable=True),
        sa.Column('twilio_account_sid', sa.String(length=34), nullable=True),
        sa.Column('recording_url', sa.String(length=500), nullable=True),
        sa.Column('transcription', sa.Text(), nullable=True),
        sa.Column('error_message', sa.String(length=500), nullable=True),
        sa.Column('claimed_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('attempts', sa.Integer(), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(['account_id'], ['accounts.id'], name=op.f('fk_calls_account_id_accounts')),
        sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_calls_user_id_users')),
        sa.ForeignKeyConstraint(['hold_id'], ['holds.id'], name=op.f('fk_calls_hold_id_holds')),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_calls')),
        sa.UniqueConstraint('twilio_sid', name=op.f('uq_calls_twilio_sid')),
        sa.UniqueConstraint('broadcast_id', 'to', name='uq_calls_broadcast_id_to'),
    )
    op.create_index('ix_calls_account_created', 'calls', ['account_id', 'created_at', 'id'])
    op.create_index('ix_calls_status_updated_at', 'calls', ['status', 'updated_at'])
    op.create_index('ix_calls_broadcast_status', 'calls', ['broadcast_id', 'status'])
    op.create_table(
        'voice_broadcasts',
        sa.Column('id', sa.String(length=40), nullable=False),
        sa.Column('account_id', sa.String(length=40), nullable=False),
        sa.Column('user_id', sa.String(length=40), nullable=True),
        sa.Column('name', sa.String(length=200), nullable=False),
        sa.Column('from', sa.String(length=20), nullable=False),
        sa.Column('say', sa.Text(), nullable=True),
        sa.Column('play_url', sa.String(length=500), nullable=True),
        sa.Column('machine_detection', sa.Boolean(), nullable=False),
        sa.Column('expected_minutes', sa.Integer(), nullable=False),
        sa.Column('max_minutes', sa.Integer(), nullable=False),
        sa.Column('quiet_start', sa.String(length=5), nullable=True),
        sa.Column('quiet_end', sa.String(length=5), nullable=True),
        sa.Column('status', sa.String(length=16), nullable=False),
        sa.Column('credits_estimated', sa.BigInteger(), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(['account_id'], ['accounts.id'], name=op.f('fk_voice_broadcasts_account_id_accounts')),
        sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_voice_broadcasts_user_id_users')),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_voice_broadcasts')),
    )
    op.create_index('ix_voice_broadcasts_account_created', 'voice_broadcasts', ['account_id', 'created_at', 'id'])


def downgrade() -> None:
    op.drop_index('ix_voice_broadcasts_account_created', table_name='voice_broadcasts')
    op.drop_table('voice_broadcasts')
    op.drop_index('ix_calls_broadcast_status', table_name='calls')
    op.drop_index('ix_calls_status_updated_at', table_name='calls')
    op.drop_index('ix_calls_account_created', table_name='calls')
    op.drop_table('calls')
    with op.batch_alter_table('phone_numbers') as batch:
        batch.drop_column('transcribe')
        batch.drop_column('voicemail')
        batch.drop_column('forward_to')
    with op.batch_alter_table('accounts') as batch:
        batch.drop_column('inbound_grace_minutes')
        batch.drop_column('call_max_minutes')
