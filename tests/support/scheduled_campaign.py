"""A campaign scheduled after the messages table was analyzed: PostgreSQL's statistics know of no scheduled message,
as a big table's do long after (autovacuum analyzes again only once a tenth of it has changed)."""

from datetime import datetime, timedelta

from sqlalchemy import Connection, text

MESSAGES = text(
    "INSERT INTO messages (id, account_id, direction, \"to\", \"from\", body, status, segments, encoding,"
    " credits_estimated, attempts, media_urls, created_at, updated_at, send_at)"
    " SELECT :prefix || n, 'acct_' || (n % 1000), 'outbound', '+1415' || lpad((n % 10000000)::text, 7, '0'),"
    " '+14155550199', 'Hi', :status, 1, 'GSM-7', 1000, 0, '[]', :now, :now, :send_at"
    " FROM generate_series(1, :count) AS n")


def schedule_unseen_campaign(connection: Connection, *, delivered: int, scheduled: int, now: datetime) -> None:
    """`delivered` messages, the table analyzed (and never again: autovacuum off for it), then `scheduled` ones due
    a minute before `now`; committed."""
    connection.execute(text("ALTER TABLE messages SET (autovacuum_enabled = false)"))
    connection.execute(MESSAGES, dict(prefix="d", status="delivered", count=delivered, now=now, send_at=None))
    connection.commit()
    connection.execute(text("ANALYZE messages"))
    connection.execute(MESSAGES, dict(prefix="s", status="scheduled", count=scheduled, now=now,
                                      send_at=now - timedelta(minutes=1)))
    connection.commit()
