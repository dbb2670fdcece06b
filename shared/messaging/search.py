"""Finding an account's messages, sent and received: the filters of GET /v1/messages, newest first.

Each filter is served by an index of `messages` led by the account (or by a column only one account's rows
share: a campaign, a user, a recipient), so a page costs the same at a million messages as at a hundred;
tests/integration/test_list_indexes.py reads PostgreSQL's plans to keep it so. Filters combine with AND.
"""

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from shared.models import Message

DIRECTIONS = ("outbound", "inbound")
STATUSES = ("accepted", "scheduled", "queued", "sending", "sent", "delivered", "undelivered", "failed", "canceled",
            "parked", "received")


@dataclass(frozen=True)
class MessageFilter:
    direction: str | None = None
    status: str | None = None
    campaign_id: str | None = None
    user_id: str | None = None
    to: str | None = None
    from_: str | None = None
    created_after: datetime | None = None  # inclusive
    created_before: datetime | None = None  # exclusive


def find_messages(session: Session, account_id: str, wanted: MessageFilter, *, limit: int,
                  before_id: str | None = None) -> list[Message]:
    """The account's messages matching every filter given, in descending id order (ids are time-ordered)."""
    query = select(Message).where(Message.account_id == account_id)
    for column, value in ((Message.direction, wanted.direction), (Message.status, wanted.status),
                          (Message.campaign_id, wanted.campaign_id), (Message.user_id, wanted.user_id),
                          (Message.to, wanted.to), (Message.from_, wanted.from_)):
        if value is not None:
            query = query.where(column == value)
    if wanted.created_after is not None:
        query = query.where(Message.created_at >= wanted.created_after)
    if wanted.created_before is not None:
        query = query.where(Message.created_at < wanted.created_before)
    if before_id is not None:
        query = query.where(Message.id < before_id)
    return list(session.scalars(query.order_by(Message.id.desc()).limit(limit)))


def resends_of(session: Session, message_ids: list[str]) -> dict[str, str]:
    """original id -> the id of its toll-free resend, for those of `message_ids` that were resent (one query)."""
    if not message_ids:
        return {}
    return dict(session.execute(select(Message.reprocessed_from, Message.id)
                                .where(Message.reprocessed_from.in_(message_ids))).all())
