"""Finding an account's messages, sent and received: the filters of GET /v1/messages, newest first.

Newest first is `created_at` descending, then id: the order of an index behind each filter, led by the account
(or by a column only one account's rows share: a campaign, a user), then `created_at`, then id. A page is then a
walk down one index from where the previous page ended, including with a created range, so it costs the same at
a million messages as at a hundred (tests/integration/test_list_indexes.py reads PostgreSQL's plans and the pages
they touch to keep it so). The cursor is the last message's id; the page after it starts below that message's
(created_at, id). Filters combine with AND.
"""

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import ScalarSelect, Select, select, tuple_
from sqlalchemy.orm import Session

from shared.models import Campaign, Message, User

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
    """The account's messages matching every filter given, newest first; `before_id`: those after that one."""
    return list(session.scalars(messages_query(account_id, wanted, limit=limit, before_id=before_id)))


def messages_query(account_id: str, wanted: MessageFilter, *, limit: int, before_id: str | None = None) -> Select:
    """find_messages' one statement (its plan is what the index test reads).

    With a campaign (or a user), the messages are found through its index alone, the account checked once on the
    campaign's row: its messages are all the account's, which the planner cannot know, and asked for both it
    would expect few of them and read every one to sort them.
    """
    if wanted.campaign_id is not None:
        scope = Message.campaign_id == _owned(Campaign, wanted.campaign_id, account_id)
    elif wanted.user_id is not None:
        scope = Message.user_id == _owned(User, wanted.user_id, account_id)
    else:
        scope = Message.account_id == account_id
    query = select(Message).where(scope)
    for column, value in ((Message.direction, wanted.direction), (Message.status, wanted.status),
                          (Message.user_id, wanted.user_id if wanted.campaign_id is not None else None),
                          (Message.to, wanted.to), (Message.from_, wanted.from_)):
        if value is not None:
            query = query.where(column == value)
    if wanted.created_after is not None:
        query = query.where(Message.created_at >= wanted.created_after)
    if wanted.created_before is not None:
        query = query.where(Message.created_at < wanted.created_before)
    if before_id is not None:
        last_created_at = select(Message.created_at).where(Message.id == before_id).scalar_subquery()
        query = query.where(tuple_(Message.created_at, Message.id) < tuple_(last_created_at, before_id))
    return query.order_by(Message.created_at.desc(), Message.id.desc()).limit(limit)


def resends_of(session: Session, message_ids: list[str]) -> dict[str, str]:
    """original id -> the id of its toll-free resend, for those of `message_ids` that were resent (one query)."""
    if not message_ids:
        return {}
    return dict(session.execute(select(Message.reprocessed_from, Message.id)
                                .where(Message.reprocessed_from.in_(message_ids))).all())


def _owned(model: type[Campaign] | type[User], row_id: str, account_id: str) -> ScalarSelect:
    """`row_id` if that campaign (or user) is the account's, else NULL, which no message matches."""
    return select(model.id).where(model.id == row_id, model.account_id == account_id).scalar_subquery()
