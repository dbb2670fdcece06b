"""A campaign once created: read it (counts by where its messages are), pause, resume or cancel it."""

from datetime import UTC, datetime

from sqlalchemy import case, func, select, update
from sqlalchemy.orm import Session

from shared.campaigns.creation import CREATING
from shared.errors import Conflict, NotFound
from shared.ledger import book
from shared.ledger.expiry import utc
from shared.messaging.send_policy import CANCELED, PAUSED
from shared.models import Campaign, CampaignRecipient, CampaignStep, Hold, Message
from shared.money import format_credits

WAITING = ("accepted", "scheduled", "parked")
_QUERY_CHUNK = 1000  # ids per IN (...): below every database's bound-parameter limit
_COUNT_OF_STATUS = {"accepted": "queued", "scheduled": "scheduled", "queued": "queued", "sending": "queued",
                    "sent": "sent", "delivered": "delivered", "undelivered": "failed", "failed": "failed",
                    "canceled": "canceled", "parked": "parked"}


def get_campaign(session: Session, campaign_id: str, *, account_id: str | None) -> Campaign:
    campaign = session.get(Campaign, campaign_id)
    if campaign is None or (account_id is not None and campaign.account_id != account_id):
        raise NotFound(f"No campaign {campaign_id}.")
    return campaign


def campaign_view(session: Session, campaign: Campaign) -> dict:
    """The API's shape: counts of messages by where they are, skips by reason, credits as decimal strings.

    `scheduled` counts the messages waiting for a time (quiet hours, a pause); `next_send_at` is when the next
    one is due: the soonest of their times, else the start of the next step that has not fanned out.
    """
    counts = dict.fromkeys(("queued", "scheduled", "sent", "delivered", "failed", "canceled", "parked", "skipped"), 0)
    charged = 0
    next_send_at = None
    for status, number, credits, soonest in session.execute(
            select(Message.status, func.count(), func.coalesce(func.sum(Message.credits_charged), 0),
                   func.min(Message.send_at))
            .where(Message.campaign_id == campaign.id).group_by(Message.status)):
        counts[_COUNT_OF_STATUS.get(status, "queued")] += number
        charged += int(credits)  # PostgreSQL's SUM of BIGINT is a numeric
        if status == "scheduled":
            next_send_at = soonest
    held = int(session.scalar(
        select(func.coalesce(func.sum(Hold.amount), 0)).join(Message, Message.hold_id == Hold.id)
        .where(Message.campaign_id == campaign.id, Hold.status == "pending")))
    skipped = dict(session.execute(
        select(CampaignRecipient.skip_reason, func.count()).where(
            CampaignRecipient.campaign_id == campaign.id, CampaignRecipient.skip_reason.is_not(None))
        .group_by(CampaignRecipient.skip_reason)).all())
    counts["skipped"] = sum(skipped.values())
    steps = session.scalars(select(CampaignStep).where(CampaignStep.campaign_id == campaign.id)
                            .order_by(CampaignStep.step))
    steps = list(steps)
    finished = all(step.status == "done" for step in steps) and not (
        counts["queued"] or counts["scheduled"] or counts["parked"])
    if next_send_at is None and campaign.status in ("scheduled", "running"):
        next_send_at = min((step.starts_at for step in steps if step.status == "pending"), default=None)
    return {
        "id": campaign.id,
        "user_id": campaign.user_id,
        "name": campaign.name,
        "status": "completed" if campaign.status == "running" and finished else campaign.status,
        "from": campaign.from_,
        "counts": {"total": campaign.recipients, **counts},
        "skip_reasons": skipped,
        "next_send_at": _iso(next_send_at),
        "credits_estimated": format_credits(campaign.credits_estimated),
        "credits_held": format_credits(held),
        "credits_charged": format_credits(charged),
        "quiet_hours": {"start": campaign.quiet_start, "end": campaign.quiet_end},
        "steps": [{"step": step.step, "delay_days": step.delay_days, "status": step.status,
                   "starts_at": _iso(step.starts_at)} for step in steps],
        "send_at": _iso(campaign.send_at),
        "created_at": _iso(campaign.created_at),
        "updated_at": _iso(campaign.updated_at),
    }


def pause_campaign(session: Session, campaign_id: str, *, account_id: str | None, now: datetime) -> Campaign:
    """Stop sending: messages not yet claimed wait as `scheduled` (no send time) until resumed; holds stay."""
    campaign = _steerable(session, campaign_id, account_id)
    if campaign.status == "paused":
        return campaign
    campaign.status, campaign.updated_at = "paused", now
    session.execute(update(Message).where(Message.campaign_id == campaign_id,
                                          Message.status.in_(("accepted", "scheduled")))
                    .values(status="scheduled", send_at=None, error_message=PAUSED, updated_at=now)
                    .execution_options(synchronize_session=False))
    return campaign


def resume_campaign(session: Session, campaign_id: str, *, account_id: str | None,
                    now: datetime) -> tuple[Campaign, list[str]]:
    """Send again; returns the ids of the messages to enqueue (quiet hours are checked again at the send)."""
    campaign = _steerable(session, campaign_id, account_id)
    if campaign.status != "paused":
        return campaign, []
    started = session.scalar(select(CampaignStep.status).where(CampaignStep.campaign_id == campaign_id,
                                                               CampaignStep.step == 0)) != "pending"
    campaign.status = "running" if started or utc(campaign.send_at) <= now else "scheduled"  # naive on SQLite
    campaign.updated_at = now
    ids = list(session.scalars(select(Message.id).where(Message.campaign_id == campaign_id,
                                                        Message.status == "scheduled", Message.send_at.is_(None))))
    for start in range(0, len(ids), _QUERY_CHUNK):
        session.execute(update(Message).where(Message.id.in_(ids[start:start + _QUERY_CHUNK]))
                        .values(status="accepted", error_message=None, updated_at=now)
                        .execution_options(synchronize_session=False))
    return campaign, ids


def cancel_campaign(session: Session, campaign_id: str, *, account_id: str | None, now: datetime) -> Campaign:
    """Nothing more goes out: waiting messages are canceled and their holds released; steps not done end."""
    campaign = get_campaign(session, campaign_id, account_id=account_id)
    if campaign.status == "canceled":
        return campaign
    if campaign_view(session, campaign)["status"] == "completed":
        raise Conflict(f"campaign {campaign_id} has completed: there is nothing left to cancel")
    campaign.status, campaign.updated_at = "canceled", now
    # a step fanning out ends too: its chunks still to come make nothing (and a lost chunk job never would end it)
    session.execute(update(CampaignStep).where(CampaignStep.campaign_id == campaign_id,
                                               CampaignStep.status.in_(("pending", "fanning_out")))
                    .values(status="canceled"))
    holds = list(session.scalars(select(Message.hold_id).join(Hold, Hold.id == Message.hold_id).where(
        Message.campaign_id == campaign_id, Message.status.in_(WAITING), Hold.status == "pending")))
    for hold_id in holds:
        book.void(session, hold_id, now=now)
    session.execute(update(Message).where(Message.campaign_id == campaign_id, Message.status.in_(WAITING))
                    .values(status="canceled", error_message=CANCELED, credits_charged=case(
                        (Message.hold_id.is_(None), None), else_=0), updated_at=now)
                    .execution_options(synchronize_session=False))
    return campaign


def cancel_account_campaigns(session: Session, account_id: str, *, now: datetime) -> list[str]:
    """The account was canceled: its campaigns and drips that could still send are canceled; returns their ids."""
    canceled = []
    for campaign_id in list(session.scalars(select(Campaign.id).where(
            Campaign.account_id == account_id, Campaign.status != "canceled").order_by(Campaign.id))):
        try:
            cancel_campaign(session, campaign_id, account_id=account_id, now=now)
        except Conflict:  # completed: nothing of it is left to send
            continue
        canceled.append(campaign_id)
    return canceled


def _steerable(session: Session, campaign_id: str, account_id: str | None) -> Campaign:
    """A campaign that may be paused or resumed: not canceled, and not still being created (that would start it
    before its recipients are all written)."""
    campaign = get_campaign(session, campaign_id, account_id=account_id)
    if campaign.status in ("canceled", CREATING):
        raise Conflict(f"Campaign {campaign_id} is {campaign.status}.")
    return campaign



def _iso(value: datetime | None) -> str | None:
    if value is None:
        return None
    return (value if value.tzinfo else value.replace(tzinfo=UTC)).isoformat()
