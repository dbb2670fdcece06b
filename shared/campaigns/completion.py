"""A campaign's completion, made a fact: found by the sweeper, stamped `completed_at`, told as campaign.completed.

A campaign completes by its messages moving on, one by one, in many transactions (sends, callbacks,
settlements); checking it in each of them would cost every campaign message a query. So the sweeper asks
instead, for running campaigns not yet stamped: every step fanned out and none of its messages waiting (the
statuses the campaign's counts call queued or parked). The stamp and the event are one transaction; the
event's key is the campaign's, so a second sweeper writes nothing.
"""

from datetime import datetime

from sqlalchemy import exists, select, update
from sqlalchemy.orm import Session

from shared.campaigns.steering import campaign_view
from shared.events.outbox import emit
from shared.models import Campaign, CampaignStep, Message

WAITING_STATUSES = ("accepted", "scheduled", "queued", "sending", "parked")
BATCH = 200


def complete_finished(session: Session, *, now: datetime) -> list[str]:
    """Stamp the running campaigns that are finished and write their campaign.completed; their ids."""
    unfinished_step = exists().where(CampaignStep.campaign_id == Campaign.id, CampaignStep.status != "done")
    waiting = exists().where(Message.campaign_id == Campaign.id, Message.status.in_(WAITING_STATUSES))
    finished = session.scalars(select(Campaign.id).where(Campaign.status == "running", Campaign.completed_at.is_(None),
                                                         ~unfinished_step, ~waiting)
                               .order_by(Campaign.id).limit(BATCH)).all()
    completed = []
    for campaign_id in finished:
        stamped = session.execute(update(Campaign).where(Campaign.id == campaign_id, Campaign.completed_at.is_(None))
                                  .values(completed_at=now).execution_options(synchronize_session=False)).rowcount
        if not stamped:
            continue
        campaign = session.get(Campaign, campaign_id)
        emit(session, "campaign.completed", account_id=campaign.account_id, key=f"campaign.completed:{campaign_id}",
             data={**campaign_view(session, campaign), "account_id": campaign.account_id}, now=now)
        completed.append(campaign_id)
    return completed
