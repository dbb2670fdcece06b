"""What accounts have scheduled and not held yet: scheduled messages, and campaign and drip steps not fanned out.

A send holds its credits only when it goes, so until then the balance does not show it: forecasts and a new
campaign's pre-flight add it from here. A step being fanned out counts what its chunks have not held yet.
"""

from collections import defaultdict
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from shared.db import any_of
from shared.models import Campaign, CampaignChunk, CampaignStep, Message

messages = Message.__table__
campaigns = Campaign.__table__
steps = CampaignStep.__table__
chunks = CampaignChunk.__table__

LIVE_CAMPAIGN_STATUSES = ("scheduled", "running")  # paused ones wait for a person; canceled ones never go
OPEN_STEP_STATUSES = ("pending", "fanning_out")


def scheduled_sends(session: Session, account_ids: list[str], *, until: datetime, user_id: str | None = None,
                    excluding_campaign: str | None = None) -> dict[str, list[tuple[datetime, int]]]:
    """Per account, (when, millicredits) of each scheduled send due before `until`; only `user_id`'s when given."""
    sends: dict[str, list[tuple[datetime, int]]] = defaultdict(list)
    texts = select(messages.c.account_id, messages.c.send_at, messages.c.credits_estimated).where(
        any_of(session, messages.c.account_id, account_ids), messages.c.status == "scheduled", messages.c.send_at < until)
    held = (select(func.coalesce(func.sum(chunks.c.credits_held), 0))
            .where(chunks.c.campaign_id == steps.c.campaign_id, chunks.c.step == steps.c.step).scalar_subquery())
    drips = (select(campaigns.c.account_id, steps.c.starts_at, steps.c.credits_estimated - held)
             .join(steps, steps.c.campaign_id == campaigns.c.id)
             .where(any_of(session, campaigns.c.account_id, account_ids), campaigns.c.status.in_(LIVE_CAMPAIGN_STATUSES),
                    steps.c.status.in_(OPEN_STEP_STATUSES), steps.c.starts_at < until))
    if user_id is not None:
        texts = texts.where(messages.c.user_id == user_id)
        drips = drips.where(campaigns.c.user_id == user_id)
    if excluding_campaign is not None:
        drips = drips.where(campaigns.c.id != excluding_campaign)
    for account_id, at, credits in [*session.execute(texts).all(), *session.execute(drips).all()]:
        if credits > 0:
            sends[account_id].append((at, int(credits)))
    return dict(sends)
