"""The daily send cap of new accounts, so a stolen card cannot turn into a burst of spam and chargebacks.

An account younger than `young_days` may send at most `per_day` messages per local day (midnight to
midnight in its time zone). A message counts when it is accepted, a campaign counts its sendable
recipients when it is created (its drip steps do not count again). The cap is checked after every
other check, so a refused message never counts. Established accounts pay nothing for it: their age
comes with the facts intake reads anyway; a young account costs one counting query per batch.

It is a guard, not a lock: two batches of one account accepted at the same instant may each see the
same remainder and pass the cap by at most one batch.
"""

from dataclasses import dataclass
from datetime import date, datetime, timedelta

from sqlalchemy import bindparam, func, select
from sqlalchemy.orm import Session

from shared.config import Settings
from shared.errors import SendLimitReached
from shared.ledger.expiry import local_midnight, utc, zone
from shared.models import Campaign, CampaignRecipient, Message


@dataclass(frozen=True)
class SendCap:
    young_days: int  # accounts younger than this are capped (0: none is)
    per_day: int  # messages per local day

    @classmethod
    def from_settings(cls, settings: Settings) -> "SendCap":
        return cls(young_days=settings.new_account_days, per_day=settings.new_account_daily_messages)

    def applies(self, account_created_at: datetime, now: datetime) -> bool:
        return self.young_days > 0 and utc(account_created_at) > now - timedelta(days=self.young_days)


# Messages accepted one by one (a campaign's messages are counted by its recipients) plus the sendable
# recipients of the campaigns created, since a local midnight; both use an index on account_id.
_SENT_SINCE = select(
    select(func.count()).select_from(Message)
    .where(Message.account_id == bindparam("account_id"), Message.direction == "outbound",
           Message.campaign_id.is_(None), Message.created_at >= bindparam("since"))
    .scalar_subquery()
    + select(func.count()).select_from(CampaignRecipient).join(Campaign, Campaign.id == CampaignRecipient.campaign_id)
    .where(Campaign.account_id == bindparam("account_id"), Campaign.created_at >= bindparam("since"),
           CampaignRecipient.skip_reason.is_(None))
    .scalar_subquery()
)


class DailySends:
    """What each capped account has left today, within one unit of work: counted once, then taken from."""

    def __init__(self, session: Session, cap: SendCap, now: datetime):
        self._session, self._cap, self._now = session, cap, now
        self._left: dict[str, int] = {}

    def take(self, account_id: str, *, created_at: datetime, timezone: str, count: int = 1) -> None:
        """Count `count` sends against the account's day; raises SendLimitReached when they do not fit."""
        if not self._cap.applies(created_at, self._now):
            return
        today = self._now.astimezone(zone(timezone)).date()
        if account_id not in self._left:
            since = local_midnight(today, zone(timezone))
            sent = self._session.connection().execute(_SENT_SINCE, {"account_id": account_id, "since": since}).scalar()
            self._left[account_id] = self._cap.per_day - sent
        left = self._left[account_id]
        if count > left:
            raise self._refusal(today, timezone, max(left, 0), count)
        self._left[account_id] = left - count

    def _refusal(self, today: date, timezone: str, left: int, count: int) -> SendLimitReached:
        resets_at = local_midnight(today + timedelta(days=1), zone(timezone)).astimezone(zone(timezone))
        asked = f"; this campaign has {count} sendable recipients" if count > 1 else ""
        return SendLimitReached(
            f"An account in its first {self._cap.young_days} days may send {self._cap.per_day} messages a day; "
            f"this one has {left} left today{asked}. The limit resets at its local midnight, "
            f"{resets_at.isoformat()}.", limit=self._cap.per_day, resets_at=resets_at, now=self._now)
