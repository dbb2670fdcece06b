"""Cancel, reactivate, mark spam: each one unit of work (the caller's), each recorded as one account event.

Cancel, in this order so that it takes the rows' locks in the order every other writer does (a campaign
before its messages, a message before its hold, a hold before the account): the account's campaigns are
locked; its messages Twilio never had end `canceled` and their holds are voided; its campaigns and drips
are canceled; then, under the account lock, the account becomes `canceled` (no hold is taken any more),
its plan and rollover credits are written off but for what the holds of messages already with Twilio
still need, its numbers are released, its auto-recharge stopped and its keys revoked. Messages with
Twilio settle as usual when their callbacks come; a send step that finds a message of a canceled account
ends it `canceled` (sending._claim). Canceling a canceled account changes nothing, so a retried request
is harmless.
"""

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from shared.api_keys import issue_key, revoke_account_keys
from shared.billing import auto_recharge
from shared.campaigns.steering import cancel_account_campaigns
from shared.ledger import account_events, accounts
from shared.messaging.parking import cancel_unsent
from shared.messaging.senders import release_numbers
from shared.models import Account, Campaign, CampaignStep
from shared.voice.broadcasts import cancel_account_calls

REACTIVATED_KEY_NAME = "reactivated"
CANCELED_BY_OPERATOR = "canceled by the operator"
REASON_MAX_LENGTH = 200  # a cancel's reason becomes the status_reason and the auto-recharge's disabled_reason
MARKED_AS_SPAM = "marked as spam"


@dataclass(frozen=True)
class Canceled:
    account: Account
    changed: bool  # False: it was canceled already, nothing changed
    revoked_key_ids: list[int]  # for the web processes' key caches to forget at once


def cancel_account(session: Session, account_id: str, *, actor: str, now: datetime,
                   reason: str = CANCELED_BY_OPERATOR, action: str = "cancel") -> Canceled:
    """Cancel the account (see the module's docstring); NotFound if there is none."""
    account = accounts.get_account(session, account_id)
    if account.status == "canceled":
        return Canceled(account, changed=False, revoked_key_ids=[])
    _lock_campaigns(session, account_id)
    why = f"Account is canceled: {reason}."
    messages = cancel_unsent(session, account_id, why, now=now)
    campaigns = cancel_account_campaigns(session, account_id, now=now)
    calls = cancel_account_calls(session, account_id, reason=why, now=now)
    expired = accounts.close_account(session, account_id, reason=reason, now=now)
    if expired is None:  # a concurrent cancel won the account lock: it did all of this
        return Canceled(accounts.get_account(session, account_id), changed=False, revoked_key_ids=[])
    numbers = release_numbers(session, account_id, now=now)
    auto_recharge.disable(session, account_id, reason=f"account canceled: {reason}", now=now)
    revoked = revoke_account_keys(session, account_id, now=now)
    account_events.record(session, account_id, action, actor=actor, now=now, detail={
        "reason": reason, "messages_canceled": messages, "campaigns_canceled": campaigns, "calls_canceled": calls,
        "credits_expired": expired,
        "numbers_released": numbers, "keys_revoked": len(revoked)})
    return Canceled(accounts.get_account(session, account_id), changed=True, revoked_key_ids=revoked)


def mark_spam(session: Session, account_id: str, *, actor: str, now: datetime) -> Canceled:
    """Cancel the account (it stops sending) and raise its spam flag, which takes its never-expiring credits back;
    marking a spam account again changes nothing. Canceled first, so the locks come in cancel's order."""
    canceled = cancel_account(session, account_id, actor=actor, now=now, reason=MARKED_AS_SPAM, action="mark_spam")
    if canceled.account.spam:
        return canceled
    account = accounts.update_account(session, account_id, now=now, flags={"spam": True}, actor=actor)
    return Canceled(account, changed=True, revoked_key_ids=canceled.revoked_key_ids)


def reactivate_account(session: Session, account_id: str, *, plan_monthly_credits: int, plan_cycle: str,
                       plan_rollover: str, actor: str, now: datetime) -> tuple[Account, str]:
    """Reopen a canceled account on the plan given, with a new key (its old ones were revoked); Conflict unless
    canceled. Returns the account and the plain key, shown only in this answer."""
    account = accounts.reopen_account(session, account_id, plan_monthly_credits=plan_monthly_credits,
                                      plan_cycle=plan_cycle, plan_rollover=plan_rollover, now=now)
    api_key = issue_key(session, account_id, name=REACTIVATED_KEY_NAME)
    account_events.record(session, account_id, "reactivate", actor=actor, now=now, detail={
        "plan": {"monthly_credits": plan_monthly_credits, "cycle": plan_cycle, "rollover": plan_rollover}})
    return account, api_key


def _lock_campaigns(session: Session, account_id: str) -> None:
    """A campaign and its steps are locked before its messages, as the fan-out does."""
    ids = list(session.scalars(select(Campaign.id).where(Campaign.account_id == account_id)
                               .order_by(Campaign.id).with_for_update()))
    if ids:
        session.execute(select(CampaignStep.id).where(CampaignStep.campaign_id.in_(ids))
                        .order_by(CampaignStep.id).with_for_update())
