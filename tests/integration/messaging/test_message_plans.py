"""How PostgreSQL finds the scheduled messages the sweeper releases: batch after batch, never by reading every
scheduled message's index entry again, whatever it believes of the statuses.

Statistics taken before a campaign was scheduled (or a big table's, which autovacuum analyzes again only after a
tenth of it has changed) say there are no scheduled messages. Batches that named their messages by a list of ids and
the status, all in one transaction, let the planner take them from the index led by the status, reading every
scheduled message's entry, the dead ones too, for each batch of 500. PostgreSQL's own counts of each index's reads
say what the release cost.
"""

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import text

from shared.db import Database
from shared.messaging.sweeper import _release_due
from tests.support.index_statistics import flush_statistics, index_counts

pytestmark = pytest.mark.postgres
NOW = datetime(2026, 3, 1, 12, tzinfo=UTC)
MESSAGES = text(
    "INSERT INTO messages (id, account_id, direction, \"to\", \"from\", body, status, segments, encoding,"
    " credits_estimated, attempts, media_urls, created_at, updated_at, send_at)"
    " SELECT :prefix || n, 'acct_1', 'outbound', '+1415555' || lpad(n::text, 4, '0'), '+14155550199', 'Hi',"
    " :status, 1, 'GSM-7', 1000, 0, '[]', :now, :now, :send_at FROM generate_series(1, :count) AS n")


def add_messages(connection, prefix: str, count: int, status: str, *, send_at: datetime | None = None) -> None:
    connection.execute(MESSAGES, dict(prefix=prefix, status=status, count=count, now=NOW, send_at=send_at))


def test_releasing_a_scheduled_campaign_never_reads_every_scheduled_message_s_entry_for_each_batch(postgres_database):
    # Given a table analyzed while every message was delivered, then a campaign of 5,000 messages scheduled and due
    with postgres_database.engine.connect() as connection:
        connection.execute(text("ALTER TABLE messages SET (autovacuum_enabled = false)"))  # the statistics stay
        add_messages(connection, "d", 5_000, "delivered")
        connection.commit()
        connection.execute(text("ANALYZE messages"))
        add_messages(connection, "s", 5_000, "scheduled", send_at=NOW - timedelta(minutes=1))
        connection.commit()
    alone = Database(postgres_database.url, pool_size=1)  # the release's one backend, whose counts are then flushed
    try:
        with postgres_database.engine.connect() as reader, postgres_database.engine.connect() as connection:
            flush_statistics(connection)
            before = index_counts(reader, "messages", "idx_tup_read")

            # When the sweeper releases them, 500 a batch
            due = _release_due(alone, NOW)
            with alone.engine.connect() as released:
                flush_statistics(released)
            reads = {name: count - before[name] for name, count in
                     index_counts(reader, "messages", "idx_tup_read").items()}
    finally:
        alone.dispose()

    # Then all are released, and no batch read the entry of every message still scheduled: 82,500 entries before.
    # Each batch reads its own entries and the dead ones of the batches before it, about 27,500 in all, or about
    # 13,000 where the next batch's scan marks them dead (which a transaction holding an id anywhere on the server
    # prevents)
    assert len(due) == 5_000 and len(set(due)) == 5_000
    assert reads["ix_messages_status_updated_at"] < 40_000, reads
