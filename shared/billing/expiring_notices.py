"""credits.expiring: the month's expiring report, told to each account that asked for it, once a month.

In the last NOTICE_DAYS of an account's local month, the credits that expire when it ends (the balance's
`expiring_end_of_month`) are written as one credits.expiring event, keyed by the account and the month, so
the sweeper asking again (it does, every few seconds) writes nothing more. The event carries the plan advice
over the last three ended months (shared.billing.advice): what to change before the credits lapse again. Only
accounts with an enabled endpoint taking the type are looked at; an account with nothing expiring gets no event.
"""

from datetime import datetime, timedelta

from sqlalchemy import select, true
from sqlalchemy.orm import Session

from shared.billing.advice import advice_for
from shared.billing.calendar import period_end, period_of
from shared.events.outbox import emit
from shared.events.types import ALL
from shared.ledger import book
from shared.ledger.expiry import utc
from shared.models import Account, WebhookEndpoint, WebhookSubscription
from shared.money import format_credits

NOTICE_DAYS = 7


def note_expiring(session: Session, *, now: datetime) -> list[str]:
    """Write the credits.expiring events due now; the accounts they are for."""
    now = utc(now)
    subscribers = session.execute(
        select(Account.id, Account.timezone).distinct()
        .join(WebhookSubscription, WebhookSubscription.account_id == Account.id)
        .join(WebhookEndpoint, WebhookEndpoint.id == WebhookSubscription.endpoint_id)
        .where(WebhookSubscription.event_type.in_(["credits.expiring", ALL]), WebhookEndpoint.enabled == true())
        .order_by(Account.id)).all()
    told = []
    for account_id, timezone in subscribers:
        period = period_of(now, timezone)
        ends = period_end(period, timezone)
        if ends - now > timedelta(days=NOTICE_DAYS):
            continue
        expiring = book.balance(session, account_id, now=now).expiring_end_of_month
        if not expiring:
            continue
        advice = advice_for(session, account_id, now=now).as_dict()
        if emit(session, "credits.expiring", account_id=account_id, key=f"credits.expiring:{account_id}:{period}",
                now=now, data={"account_id": account_id, "period": str(period), "credits": format_credits(expiring),
                               "expires_at": ends.isoformat(), "advice": advice}):
            told.append(account_id)
    return told
