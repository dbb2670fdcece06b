"""How PostgreSQL finds the scheduled messages the sweeper releases: batch after batch, never by reading every
scheduled message's index entry again, whatever it believes of the statuses.

Statistics taken before a campaign was scheduled (or a big table's, which autovacuum analyzes again only after a
tenth of it has changed) say there are no scheduled messages. Batches that named their messages by a list of ids and
the status, all in one transaction, let the planner take them from the index led by the status, reading every
scheduled message's entry, the dead ones too, for each batch of 500. PostgreSQL's own counts of each index's reads
say what the release cost.
"""

from datetime import UTC, datetime

import pytest

from shared.messaging.sweeper import _release_due
from tests.support.index_statistics import entries_read
from tests.support.scheduled_campaign import schedule_unseen_campaign

pytestmark = pytest.mark.postgres
NOW = datetime(2026, 3, 1, 12, tzinfo=UTC)


def test_releasing_a_scheduled_campaign_never_reads_every_scheduled_message_s_entry_for_each_batch(postgres_database):
    # Given a table analyzed while every message was delivered, then a campaign of 5,000 messages scheduled and due
    with postgres_database.engine.connect() as connection:
        schedule_unseen_campaign(connection, delivered=5_000, scheduled=5_000, now=NOW)

    # When the sweeper releases them, 500 a batch
    due, reads = entries_read(postgres_database.url, "messages", lambda database: _release_due(database, NOW))

    # Then all are released, and no batch read the entry of every message still scheduled: 82,500 entries before.
    # Each batch reads its own entries and the dead ones of the batches before it, about 27,500 in all, or about
    # 13,000 where the next batch's scan marks them dead (which a transaction holding an id anywhere on the server
    # prevents)
    assert len(due) == 5_000 and len(set(due)) == 5_000
    assert reads["ix_messages_status_updated_at"] < 40_000, reads
