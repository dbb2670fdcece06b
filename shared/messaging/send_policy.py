"""Whether a message may go now: the send step asks with the message row locked, just before it holds credits.

Messaging owns this rule, so the send step needs nothing from the packages above it: a campaign's
message reads its campaign's own row (paused, canceled, its quiet hours). Every text, campaign or not,
is checked against the recipient's opt-out and the account's do-not-contact list once more, since
either may have arrived after the message was accepted or scheduled.

Quiet hours (TCPA): automated texts (campaigns and drips, and single sends scheduled for later) reach
a recipient only inside the account's window of the recipient's local time, 08:00-21:00 unless the
account set its own (equal start and end: none; the end is exclusive). An immediate single send, a
person replying in a conversation, goes at once, unless the account's `quiet_hours_scope` is `all`.
"""

from collections.abc import Collection
from datetime import datetime, time

from sqlalchemy import Row
from sqlalchemy.orm import Session

from shared.errors import NotFound, ValidationFailed
from shared.ledger import book
from shared.messaging.phone_numbers import time_zones_of
from shared.messaging.quiet_hours import Window, next_allowed, zones
from shared.models import Account, Campaign

PAUSED = "The campaign is paused; its messages wait until it is resumed."
CANCELED = "The campaign was canceled."
OPTED_OUT = "The recipient opted out (or was listed as do-not-contact) after the message was accepted."


SCOPES = ("automated", "all")


def gate_message(session: Session, message: Row, account, *, recipient_opted_out: bool,
                 now: datetime) -> dict | None:
    """Called by the send step with the message row locked (`message`, with its hold's `hold_status`): None to
    send it now, else the message's new columns (the caller writes them): the status it waits in, and why.

    A message to a recipient on the account's opt-out or do-not-contact list is canceled, not charged
    (its hold released). A paused campaign's message waits unscheduled; a canceled campaign's is
    canceled; one outside the recipient's quiet hours is scheduled for the window's next opening.
    """
    if not gated(message, account, recipient_opted_out=recipient_opted_out):
        return None
    if recipient_opted_out:
        return _cancel(session, message, OPTED_OUT, now)
    if message.campaign_id is None:  # automated, or the account's quiet hours cover every text
        allowed = next_allowed(now, zones(time_zones_of(message.to), account.timezone), account_window(account))
        return _wait(allowed, None, now) if allowed > now else None
    campaign = session.get(Campaign, message.campaign_id)
    if campaign.status == "paused":
        return _wait(None, PAUSED, now)
    if campaign.status == "canceled":
        return _cancel(session, message, CANCELED, now)
    allowed = next_allowed(now, zones(time_zones_of(message.to), account.timezone), window_of(campaign))
    if allowed > now:
        return _wait(allowed, None, now)
    return None


def gated(message: Row, account, *, recipient_opted_out: bool) -> bool:
    """Whether gate_message may hold the message back at all, whatever the time: not for a text typed now (not
    scheduled: `send_at` is None), outside any campaign, to a recipient who has not opted out, from an account whose
    quiet hours cover automated texts only. The send step asks gate_message (with the ORM session it needs) only
    about a message it may hold back."""
    return (recipient_opted_out or message.campaign_id is not None or message.send_at is not None  # automated
            or account.quiet_hours_scope == "all")


def _cancel(session: Session, message: Row, reason: str, now: datetime) -> dict:
    if message.hold_status == "pending":
        book.void(session, message.hold_id, now=now)
    return dict(status="canceled", error_message=reason, updated_at=now,
                credits_charged=0 if message.hold_status is not None else None)


def account_window(account: Account) -> Window:
    """The account's quiet-hours window; the TCPA's 08:00-21:00 unless it set its own."""
    if account.quiet_start is None:
        return Window()
    return Window(time.fromisoformat(account.quiet_start), time.fromisoformat(account.quiet_end))


def set_quiet_hours(session: Session, account_id: str, *, window: Window | None, scope: str | None,
                    clear: bool = False, bounds: Collection[str] = ("start", "end")) -> Account:
    """Set the account's window (`clear`: back to 08:00-21:00) and/or scope; None leaves either as it is. Only the
    window's `bounds` named are set: a change that names the start alone keeps the end the account has."""
    account = session.get(Account, account_id, with_for_update=True)
    if account is None:
        raise NotFound(f"No account {account_id}.")
    if scope is not None:
        if scope not in SCOPES:
            raise ValidationFailed(f"quiet_hours_scope must be one of {', '.join(SCOPES)}",
                                   errors={"quiet_hours_scope": f"must be one of {', '.join(SCOPES)}"})
        account.quiet_hours_scope = scope
    if clear:
        account.quiet_start = account.quiet_end = None
    elif window is not None:
        given, kept = window.as_dict(), account_window(account).as_dict()  # kept: the default's, if none is set
        account.quiet_start, account.quiet_end = (given[bound] if bound in bounds else kept[bound]
                                                  for bound in ("start", "end"))
    return account


def window_of(campaign: Campaign) -> Window:
    return Window(time.fromisoformat(campaign.quiet_start), time.fromisoformat(campaign.quiet_end))


def _wait(until: datetime | None, reason: str | None, now: datetime) -> dict:
    return dict(status="scheduled", send_at=until, error_message=reason, updated_at=now)
