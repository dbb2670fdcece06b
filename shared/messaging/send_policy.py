"""Whether a message may go now: the send step asks with the message row locked, just before it holds credits.

Messaging owns this rule, so the send step needs nothing from the packages above it: a campaign's
message reads its campaign's own row (paused, canceled, its quiet hours) and the recipient's opt-out,
which may have arrived after the campaign was created. Messages sent one by one always go.
"""

from datetime import datetime, time

from sqlalchemy import select
from sqlalchemy.orm import Session

from shared.ledger import book
from shared.messaging.phone_numbers import time_zones_of
from shared.messaging.quiet_hours import Window, next_allowed, zones
from shared.models import Account, Campaign, Hold, Message, OptOut

PAUSED = "The campaign is paused; its messages wait until it is resumed."
CANCELED = "The campaign was canceled."
OPTED_OUT = "The recipient opted out after the campaign was created."


def gate_message(session: Session, message: Message, *, now: datetime) -> str | None:
    """Called by the send step with the message locked: None to send it now, else the status it waits in.

    A paused campaign's message waits unscheduled; a canceled campaign's, or one whose recipient has
    opted out since, is canceled (its hold released); one outside the recipient's quiet hours is
    scheduled for the window's next opening.
    """
    if message.campaign_id is None:
        return None
    campaign = session.get(Campaign, message.campaign_id)
    if campaign.status == "paused":
        return _wait(message, None, PAUSED, now)
    opted_out = session.scalar(select(OptOut.id).where(OptOut.account_id == message.account_id,
                                                       OptOut.phone == message.to).limit(1)) is not None
    if campaign.status == "canceled" or opted_out:
        hold = session.get(Hold, message.hold_id) if message.hold_id else None
        if hold is not None and hold.status == "pending":
            book.void(session, hold.id, now=now)
        message.status, message.error_message, message.updated_at = "canceled", OPTED_OUT if opted_out else CANCELED, now
        message.credits_charged = 0 if hold is not None else None
        return "canceled"
    account_zone = session.scalar(select(Account.timezone).where(Account.id == message.account_id))
    allowed = next_allowed(now, zones(time_zones_of(message.to), account_zone), window_of(campaign))
    if allowed > now:
        return _wait(message, allowed, None, now)
    return None


def window_of(campaign: Campaign) -> Window:
    return Window(time.fromisoformat(campaign.quiet_start), time.fromisoformat(campaign.quiet_end))


def _wait(message: Message, until: datetime | None, reason: str | None, now: datetime) -> str:
    message.status, message.send_at, message.error_message, message.updated_at = "scheduled", until, reason, now
    return "scheduled"
