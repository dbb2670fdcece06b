"""Auto-recharge: buy the account's chosen bucket when its available credits fall under the threshold.

One recharge at a time per account: a recharge starts only by one conditional UPDATE that sets
`in_flight_payment_id` where it is NULL, so 200 settlements racing to trigger it make one payment.
After a decline the next try waits (BACKOFF) and a dunning run starts; after MAX_FAILURES declines in a
row auto-recharge is disabled, with a `disabled_reason`, until the payment method is updated. A
claim whose worker died is resumed with the same payment (same gateway key: never a second charge).

The row's payment method is also the account's card on file (month-end bills and dunning use it).
"""

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import and_, bindparam, or_, select, update
from sqlalchemy.orm import Session

from shared.billing import dunning
from shared.billing.payments import PaymentGateway
from shared.billing.price_list import PriceList, current_price_list
from shared.billing.purchases import charge_payment, check_payment_method, open_payment
from shared.db import Database
from shared.errors import NotFound, ValidationFailed
from shared.ids import new_id
from shared.ledger.book import POOL_AVAILABLE
from shared.ledger.expiry import utc
from shared.models import Account, AutoRecharge, Payment

MAX_FAILURES = 3
BACKOFF = (timedelta(hours=1), timedelta(hours=6))  # wait after the 1st and 2nd decline in a row
ERROR_RETRY_AFTER = timedelta(minutes=5)  # the gateway took nothing: not the card's fault
STALE_CLAIM_AFTER = timedelta(minutes=5)  # a claim this old lost its worker: resume it

recharges = AutoRecharge.__table__
accounts = Account.__table__


@dataclass(frozen=True)
class AutoRechargeView:
    account_id: str
    enabled: bool
    threshold: int
    credits: int
    payment_method: str | None
    in_flight: bool
    consecutive_failures: int
    next_attempt_at: datetime | None
    disabled_reason: str | None
    last_payment_id: str | None


def configure(session: Session, account_id: str, *, enabled: bool, threshold_mc: int, credits_mc: int,
              payment_method: str | None, now: datetime, price_list: PriceList | None = None) -> AutoRechargeView:
    """Save the settings. A payment method given again (new or re-entered) clears failures and re-enables."""
    price_list = price_list or current_price_list(session)
    account = session.get(Account, account_id, with_for_update=True)
    if account is None:
        raise NotFound(f"No account {account_id}.")
    if not isinstance(enabled, bool):
        raise ValidationFailed("enabled must be true or false", errors={"enabled": "must be a boolean"})
    price_list.price_cents(account.plan_monthly_credits, credits_mc)
    row = _row(session, account_id, now)
    if payment_method is not None:
        card_saved(session, account_id, check_payment_method(payment_method), now=now)
    if enabled and row.payment_method is None:
        raise ValidationFailed("payment_method is required to enable auto-recharge",
                               errors={"payment_method": "is required when enabled"})
    row.enabled, row.threshold, row.credits, row.updated_at = enabled, threshold_mc, credits_mc, now
    session.flush()
    return _view(row)


def card_saved(session: Session, account_id: str, payment_method: str, *, now: datetime) -> str | None:
    """A new card on file (saved with these settings, or by the setup page): failures are forgotten, a disabled
    recharge resumes, and an unpaid dunning run pays with it; returns that run's id so the caller retries it now."""
    row = _row(session, account_id, now)
    row.payment_method = payment_method
    row.consecutive_failures = 0
    row.next_attempt_at = None
    row.disabled_reason = None
    row.updated_at = now
    session.flush()
    return dunning.payment_method_updated(session, account_id, payment_method, now=now)


def _row(session: Session, account_id: str, now: datetime) -> AutoRecharge:
    row = session.get(AutoRecharge, account_id, with_for_update=True)
    if row is None:
        row = AutoRecharge(account_id=account_id, enabled=False, threshold=0, credits=0, attempts=0,
                           consecutive_failures=0, updated_at=now)
        session.add(row)
    return row


def disable(session: Session, account_id: str, *, reason: str, now: datetime) -> bool:
    """Stop recharging (a canceled account's card is not charged), with a `disabled_reason` that saving a payment
    method again clears; True when it was on. A recharge already in flight finishes."""
    return session.execute(update(recharges).where(recharges.c.account_id == account_id, recharges.c.enabled.is_(True),
                                                   recharges.c.disabled_reason.is_(None))
                           .values(disabled_reason=reason, updated_at=now)).rowcount > 0


def get_settings(session: Session, account_id: str) -> AutoRechargeView:
    if session.get(Account, account_id) is None:
        raise NotFound(f"No account {account_id}.")
    row = session.get(AutoRecharge, account_id)
    if row is None:
        return AutoRechargeView(account_id, False, 0, 0, None, False, 0, None, None, None)
    return _view(row)


def _ready(now):
    """Enabled, not disabled, nothing in flight, not backing off, and the pool of an account that is not canceled
    under the threshold (a card saved again while canceled waits for the reactivation)."""
    below = select(POOL_AVAILABLE).where(accounts.c.id == recharges.c.account_id,  # canceled: NULL, never below
                                         accounts.c.status != "canceled").scalar_subquery()
    return and_(recharges.c.enabled.is_(True), recharges.c.disabled_reason.is_(None),
                recharges.c.in_flight_payment_id.is_(None),
                or_(recharges.c.next_attempt_at.is_(None), recharges.c.next_attempt_at <= now),
                below < recharges.c.threshold)


def _stale(claimed_before):
    """A recharge in flight whose claim is older than `claimed_before` (its worker died)."""
    return and_(recharges.c.in_flight_payment_id.is_not(None), recharges.c.claimed_at <= claimed_before)


# Prebuilt: every settlement asks. `now` and `stale_before` are bound, so the statement is built once.
_DUE = select(recharges.c.account_id).where(
    recharges.c.account_id == bindparam("account_id"),
    or_(_ready(bindparam("now")), _stale(bindparam("stale_before"))))


def due(session: Session, account_id: str, *, now: datetime) -> bool:
    """Whether a recharge should be enqueued for this account now (the settle path's cheap check)."""
    return session.connection().scalar(_DUE, {"account_id": account_id, "now": now,
                                              "stale_before": now - STALE_CLAIM_AFTER}) is not None


def accounts_due(session: Session, *, now: datetime, limit: int = 1000) -> list[str]:
    """Accounts whose recharge is due or whose claim went stale: the periodic sweep's catch-up."""
    return list(session.scalars(select(recharges.c.account_id)
                                .where(or_(_ready(now), _stale(now - STALE_CLAIM_AFTER))).limit(limit)))


def claim(session: Session, account_id: str, *, now: datetime, price_list: PriceList | None = None) -> Payment | None:
    """Start a recharge if one is due and none is in flight: one conditional UPDATE decides, then its payment."""
    price_list = price_list or current_price_list(session)
    payment_id = new_id("pay")
    claimed = session.execute(update(recharges).where(recharges.c.account_id == account_id, _ready(now))
                              .values(in_flight_payment_id=payment_id, claimed_at=now,
                                      attempts=recharges.c.attempts + 1, updated_at=now)
                              .returning(recharges.c.attempts, recharges.c.credits, recharges.c.payment_method)).first()
    if claimed is None:
        return None
    plan_credits = session.scalar(select(accounts.c.plan_monthly_credits).where(accounts.c.id == account_id))
    return open_payment(session, account_id, source="auto_recharge", payment_id=payment_id,
                        idempotency_key=f"auto_recharge:{account_id}:{claimed.attempts}", credits_mc=claimed.credits,
                        amount_cents=price_list.price_cents(plan_credits, claimed.credits),
                        currency=price_list.currency, payment_method=claimed.payment_method, now=now)


def record_outcome(session: Session, payment: Payment) -> None:
    """Release the claim and count the result; runs in the transaction that records the payment."""
    row = session.scalar(select(AutoRecharge).where(AutoRecharge.account_id == payment.account_id,
                                                    AutoRecharge.in_flight_payment_id == payment.id)
                         .with_for_update())
    if row is None:
        return
    now = payment.updated_at
    row.in_flight_payment_id = None
    row.claimed_at = None
    row.last_payment_id = payment.id
    row.updated_at = now
    if payment.status == "succeeded":
        row.consecutive_failures = 0
        row.next_attempt_at = None
    elif payment.status == "error":
        row.next_attempt_at = now + ERROR_RETRY_AFTER
    else:
        row.consecutive_failures += 1
        if row.consecutive_failures >= MAX_FAILURES:
            row.disabled_reason = (f"{row.consecutive_failures} payments in a row were declined "
                                   f"({payment.decline_code}): update the payment method to re-enable")
        else:
            row.next_attempt_at = now + BACKOFF[row.consecutive_failures - 1]
        dunning.start_dunning(session, payment.account_id, reason="auto_recharge", amount_cents=payment.amount_cents,
                              currency=payment.currency, credits_mc=payment.credits,
                              payment_method=payment.payment_method, reference=payment.id, now=now)


def run(database: Database, gateway: PaymentGateway, account_id: str, *, now: datetime,
        price_list: PriceList | None = None) -> Payment | None:
    """The actor's body: resume a stale claim, or claim and pay. None when there was nothing to do."""
    with database.unit_of_work() as session:
        stale = session.scalar(select(recharges.c.in_flight_payment_id).where(
            recharges.c.account_id == account_id, _stale(now - STALE_CLAIM_AFTER)))
        payment = None if stale else claim(session, account_id, now=now, price_list=price_list)
    payment_id = stale or (payment.id if payment else None)
    if payment_id is None:
        return None
    return charge_payment(database, gateway, payment_id, now=now, then=record_outcome)


def _view(row: AutoRecharge) -> AutoRechargeView:
    return AutoRechargeView(row.account_id, row.enabled, row.threshold, row.credits, row.payment_method,
                            row.in_flight_payment_id is not None, row.consecutive_failures,
                            row.next_attempt_at and utc(row.next_attempt_at),
                            row.disabled_reason, row.last_payment_id)
