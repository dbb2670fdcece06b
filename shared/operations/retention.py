"""Retention: message bodies and the numbers of the people texted are kept CREDITQ_RETENTION_DAYS days after the
message was last touched, then redacted — by the scheduler's daily `redact_expired` job, a batch per transaction.

Redacted: a message's body (made empty), its media URLs, the contact's number (`to` of a text sent, `from` of a text
received) and the same fields in the events written about it; a campaign's recipients' numbers and merge fields
once the campaign has ended. Kept: everything that prices and proves the bill — the message row itself (id, status,
segments, credits, Twilio's sid and price), its hold and ledger entries — so balances, invoices and
`creditq ledger verify` are untouched. Only finished messages are redacted: one still waiting to be sent keeps its
body. Running it twice redacts nothing twice: each row records when it was redacted.
"""

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import case, or_, select, update
from sqlalchemy.orm import Session

from shared.db import Database
from shared.messaging.statuses import FINAL_STATUSES, INBOUND_STATUS
from shared.models import Campaign, CampaignRecipient, Message, WebhookEvent

REDACTED = "redacted"  # what a redacted number reads (fits every phone column)
BATCH = 1000  # rows per transaction: short locks, and a killed job loses at most one batch's work
FINISHED = (*FINAL_STATUSES, INBOUND_STATUS)
ENDED_CAMPAIGN = ("canceled",)  # besides those found completed (completed_at set)

messages = Message.__table__


@dataclass(frozen=True)
class Redacted:
    messages: int = 0
    campaigns: int = 0
    events: int = 0


def redact_expired(database: Database, *, now: datetime, retention_days: int, batch: int = BATCH) -> Redacted:
    """Redact what has been kept `retention_days` days; returns how much was redacted."""
    cutoff = now - timedelta(days=retention_days)
    counts = {"messages": 0, "campaigns": 0, "events": 0}
    for kind, step in (("messages", _messages_batch), ("campaigns", _campaigns_batch), ("events", _events_batch)):
        while True:
            with database.unit_of_work() as session:
                done = step(session, cutoff, now, batch)
            counts[kind] += done
            if done < batch:
                break
    return Redacted(**counts)


def _messages_batch(session: Session, cutoff: datetime, now: datetime, batch: int) -> int:
    ids = session.scalars(select(Message.id).where(Message.redacted_at.is_(None), Message.created_at < cutoff,
                                                   Message.status.in_(FINISHED))
                          .order_by(Message.created_at).limit(batch)).all()
    redact_messages(session, ids, now)
    return len(ids)


def redact_messages(session: Session, message_ids: list[str], now: datetime) -> None:
    """Blank these messages' body, media and contact's number (the ledger keeps what they cost)."""
    if message_ids:
        session.execute(update(messages).where(messages.c.id.in_(message_ids)).values({
            messages.c.body: "", messages.c.media_urls: None, messages.c.redacted_at: now,
            messages.c.to: case((messages.c.direction == "inbound", messages.c.to), else_=REDACTED),
            messages.c["from"]: case((messages.c.direction == "inbound", REDACTED), else_=messages.c["from"]),
        }))


def _campaigns_batch(session: Session, cutoff: datetime, now: datetime, batch: int) -> int:
    ended = session.scalars(select(Campaign.id).where(
        Campaign.redacted_at.is_(None), Campaign.updated_at < cutoff,
        or_(Campaign.completed_at < cutoff, Campaign.status.in_(ENDED_CAMPAIGN)))
        .order_by(Campaign.updated_at).limit(batch)).all()
    if ended:
        session.execute(update(CampaignRecipient).where(CampaignRecipient.campaign_id.in_(ended))
                        .values(to=REDACTED, fields={}))
        session.execute(update(Campaign).where(Campaign.id.in_(ended)).values(redacted_at=now))
    return len(ended)


def _events_batch(session: Session, cutoff: datetime, now: datetime, batch: int) -> int:
    events = session.scalars(select(WebhookEvent).where(WebhookEvent.redacted_at.is_(None),
                                                        WebhookEvent.created_at < cutoff)
                             .order_by(WebhookEvent.created_at).limit(batch)).all()
    for event in events:
        event.data = redacted_event_data(event.data)
        event.redacted_at = now
    return len(events)


def redacted_event_data(data: dict) -> dict:
    """An event's data without a message's body, media or contact's number (other events pass unchanged)."""
    if "body" not in data:
        return data
    contact = "from" if data.get("direction") == "inbound" else "to"
    return {**data, "body": "", contact: REDACTED, **({"media_urls": None} if "media_urls" in data else {})}
