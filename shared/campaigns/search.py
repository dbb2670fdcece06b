"""Finding an account's campaigns, and a campaign's recipients with where each one is, newest first.

A recipient is where its latest message is (one per step, found by its number: a campaign texts a number once
per step, its duplicates skipped), `skipped` when it has a skip reason, `pending` while no step has fanned out
to it.
"""

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Row, Select, and_, select
from sqlalchemy.orm import Session, aliased

from shared.campaigns.creation import CREATING
from shared.models import Campaign, CampaignRecipient, Message

CAMPAIGN_STATUSES = (CREATING, "scheduled", "running", "paused", "canceled", "completed")
RECIPIENT_STATUSES = ("pending", "skipped", "accepted", "scheduled", "queued", "sending", "sent", "delivered",
                      "undelivered", "failed", "canceled", "parked")
SKIP_REASONS = ("invalid_number", "duplicate", "opted_out", "do_not_contact", "unsupported_country")


def find_campaigns(session: Session, account_id: str, *, status: str | None = None,
                   created_after: datetime | None = None, created_before: datetime | None = None, limit: int,
                   before_id: str | None = None, user_id: str | None = None) -> list[Campaign]:
    """The account's campaigns (only `user_id`'s, if given) in descending id order. A completed campaign is stored
    `running` and stamped `completed_at` by the sweeper (shared.campaigns.completion): `completed` finds the stamped
    ones, `running` the others."""
    query = select(Campaign).where(Campaign.account_id == account_id)
    if user_id is not None:
        query = query.where(Campaign.user_id == user_id)
    if status in ("running", "completed"):
        stamped = Campaign.completed_at.is_not(None) if status == "completed" else Campaign.completed_at.is_(None)
        query = query.where(Campaign.status == "running", stamped)
    elif status is not None:
        query = query.where(Campaign.status == status)
    if created_after is not None:
        query = query.where(Campaign.created_at >= created_after)
    if created_before is not None:
        query = query.where(Campaign.created_at < created_before)
    if before_id is not None:
        query = query.where(Campaign.id < before_id)
    return list(session.scalars(query.order_by(Campaign.id.desc()).limit(limit)))


@dataclass(frozen=True)
class RecipientRow:
    id: int
    position: int
    to: str
    fields: dict
    status: str
    skip_reason: str | None
    message_id: str | None


def find_recipients(session: Session, campaign: Campaign, *, status: str | None = None,
                    skip_reason: str | None = None, limit: int, before_id: int | None = None) -> list[RecipientRow]:
    """The campaign's recipients in descending id order, each with its latest message."""
    query = recipients_query(campaign.id, campaign.from_, status=status, skip_reason=skip_reason, limit=limit,
                             before_id=before_id)
    return [_recipient(row) for row in session.execute(query)]


def recipients_query(campaign_id: str, sender: str, *, status: str | None = None, skip_reason: str | None = None,
                     limit: int, before_id: int | None = None) -> Select:
    """find_recipients' one statement (its plan is what the index test reads). A recipient's latest message is
    found by (to, from), one probe of ix_messages_to_from: the campaign's messages all go from its sender. A
    status filter reads recipients until the page is full: on a big campaign, a status few of them have reads
    more of it."""
    latest = aliased(Message)
    latest_id = (select(Message.id).where(Message.to == CampaignRecipient.to, Message.from_ == sender,
                                          Message.campaign_id == CampaignRecipient.campaign_id)
                 .order_by(Message.created_at.desc(), Message.id.desc()).limit(1)
                 .correlate(CampaignRecipient).scalar_subquery())
    query = (select(CampaignRecipient, latest.id, latest.status)
             .outerjoin(latest, latest.id == latest_id)
             .where(CampaignRecipient.campaign_id == campaign_id))
    if skip_reason is not None:
        query = query.where(CampaignRecipient.skip_reason == skip_reason)
    if status == "skipped":
        query = query.where(CampaignRecipient.skip_reason.is_not(None))
    elif status == "pending":
        query = query.where(CampaignRecipient.skip_reason.is_(None), latest.id.is_(None))
    elif status is not None:
        query = query.where(and_(CampaignRecipient.skip_reason.is_(None), latest.status == status))
    if before_id is not None:
        query = query.where(CampaignRecipient.id < before_id)
    return query.order_by(CampaignRecipient.id.desc()).limit(limit)


def _recipient(row: Row) -> RecipientRow:
    """A duplicate shares its number's latest message with the recipient it repeats: that message is not its own."""
    recipient, message_id, message_status = row
    status = "skipped" if recipient.skip_reason else (message_status or "pending")
    return RecipientRow(recipient.id, recipient.position, recipient.to, recipient.fields, status,
                        recipient.skip_reason, None if recipient.skip_reason == "duplicate" else message_id)
