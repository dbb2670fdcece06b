"""Paying for credits: a Payment row first, then the charge, then (only on success) the purchased lot.

Three steps, each safe to die after:
1. open: a `pending` Payment under its idempotency key (a replay finds it);
2. charge the gateway with the key `<payment id>:<attempt>` — outside any transaction, never holding a lock;
3. one transaction records the outcome and, on success, grants the `purchase` lot (ledger key `payment:<id>`).
A process killed between 2 and 3 leaves the payment `pending`; completing it charges again with the same
key, so the gateway answers the first result instead of charging twice, and the grant follows.
An `error` (the gateway took nothing) ends the attempt; replaying the purchase starts attempt + 1.

Auto-recharge and dunning pay through the same steps, passing `then` to act on the outcome in the
transaction of step 3.
"""

import re
from collections.abc import Callable
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from shared.billing.payments import PaymentGateway
from shared.billing.price_list import PriceList, default_price_list
from shared.db import Database
from shared.errors import Conflict, DomainError, NotFound, ValidationFailed
from shared.events.outbox import emit
from shared.ids import new_id
from shared.ledger import book
from shared.messaging import parking
from shared.models import Account, AutoRecharge, Payment
from shared.money import format_credits

SOURCES = ("api", "auto_recharge", "dunning")
MAX_PAYMENT_METHOD_LENGTH = 100
_PAYMENT_TOKEN = re.compile(rf"(?:pm|tok|card)_[A-Za-z0-9_]{{1,{MAX_PAYMENT_METHOD_LENGTH - 5}}}", re.ASCII)
_CARD_DIGITS = re.compile(r"[0-9]{12}")  # card numbers are 12 to 19 digits; gateway ids never run so long

Outcome = Callable[[Session, Payment], None]


class PaymentDeclined(DomainError):
    """The card said no. Carries the payment for the edge to show its decline code."""

    title = "Payment declined"

    def __init__(self, payment: Payment):
        super().__init__(payment.failure_message or "The payment was declined.")
        self.payment = payment


class PaymentUnavailable(DomainError):
    """The gateway could not process the payment and took nothing: the same request may succeed later."""

    title = "Payment gateway unavailable"

    def __init__(self, payment: Payment):
        super().__init__(payment.failure_message or "The payment could not be processed; try again later.")
        self.payment = payment


def check_payment_method(value: object, field: str = "payment_method") -> str:
    """A gateway token (pm_..., tok_..., card_...) or ValidationFailed; the refusal never repeats the value.

    Card data never enters creditq: anything else — a card number above all — is refused before it can be
    stored, charged, logged or echoed. A long run of digits is refused even inside a token's shape.
    """
    token = value.strip() if isinstance(value, str) else ""
    if not _PAYMENT_TOKEN.fullmatch(token) or _CARD_DIGITS.search(token):
        reason = (f"must be a payment gateway token (pm_..., tok_... or card_..., at most {MAX_PAYMENT_METHOD_LENGTH} "
                  "characters, e.g. pm_card_visa); card numbers are never accepted")
        raise ValidationFailed(f"{field} {reason}", errors={field: reason})
    return token


def payment_method_on_file(session: Session, account_id: str) -> str | None:
    """The card on file: the one saved with the auto-recharge settings, charged by recharges and dunning."""
    return session.scalar(select(AutoRecharge.payment_method).where(AutoRecharge.account_id == account_id))


def open_payment(session: Session, account_id: str, *, source: str, idempotency_key: str, credits_mc: int,
                 amount_cents: int, currency: str, payment_method: str, now: datetime,
                 dunning_run_id: str | None = None, payment_id: str | None = None) -> Payment:
    """The payment under this key: the existing one (same terms, else Conflict), or a new pending one."""
    existing = session.scalar(select(Payment).where(Payment.idempotency_key == idempotency_key))
    if existing is not None:
        if (existing.account_id, existing.credits, existing.payment_method) != (account_id, credits_mc, payment_method):
            raise Conflict("This idempotency key was used for a different payment.")
        return existing
    payment = Payment(id=payment_id or new_id("pay"), account_id=account_id, source=source, idempotency_key=idempotency_key,
                      credits=credits_mc, amount_cents=amount_cents, currency=currency, payment_method=payment_method,
                      status="pending", attempt=0, dunning_run_id=dunning_run_id, created_at=now, updated_at=now)
    session.add(payment)
    session.flush()
    return payment


def charge_payment(database: Database, gateway: PaymentGateway, payment_id: str, *, now: datetime,
                   then: Outcome | None = None) -> Payment:
    """Charge a pending payment and record the outcome (granting its credits on success); idempotent.

    A payment no longer pending is returned as it is. A gateway exception (outcome unknown) propagates and
    leaves the payment pending for a replay with the same key.
    """
    with database.unit_of_work() as session:
        payment = session.get(Payment, payment_id)
        if payment is None:
            raise NotFound(f"No payment {payment_id}.")
    if payment.status != "pending":
        return payment
    result = gateway.charge(account_id=payment.account_id, amount_cents=payment.amount_cents,
                            currency=payment.currency, payment_method=payment.payment_method,
                            idempotency_key=f"{payment.id}:{payment.attempt}",
                            description=_description(payment))
    with database.unit_of_work() as session:
        book.lock_account(session, payment.account_id)  # account before payment and run: one lock order
        current = session.get(Payment, payment_id, with_for_update=True)
        if current.status != "pending" or current.attempt != payment.attempt:
            return current  # a twin recorded this attempt first
        current.status = result.status
        current.charge_id = result.charge_id
        current.decline_code = result.decline_code
        current.failure_message = result.message
        current.updated_at = now
        if result.succeeded and current.credits:
            lot = book.grant(session, current.account_id, current.credits, "purchase", granted_at=now,
                               reference=current.id, idempotency_key=f"payment:{current.id}")
            current.lot_id = lot.id
        emit(session, "payment.succeeded" if result.succeeded else "payment.failed", account_id=current.account_id,
             key=f"payment:{current.id}:{current.attempt}", data=payment_data(current), now=now)
        if then is not None:
            then(session, current)
    if current.status == "succeeded" and current.credits:
        parking.credits_added(database, current.account_id)  # an unlocked account's parked messages go out now
    return current


def purchase(database: Database, gateway: PaymentGateway, account_id: str, credits_mc: int, payment_method: str, *,
             idempotency_key: str | None, now: datetime, price_list: PriceList | None = None) -> Payment:
    """Buy a bucket of credits; they land only when the charge succeeds.

    Raises PaymentDeclined (402 at the edge) or PaymentUnavailable (503; replaying the same key retries).
    """
    price_list = price_list or default_price_list()
    payment_method = check_payment_method(payment_method)
    with database.unit_of_work() as session:
        account = session.get(Account, account_id)
        if account is None:
            raise NotFound(f"No account {account_id}.")
        if account.spam:
            raise Conflict(f"Account {account_id} is flagged as spam: it cannot buy credits.")
        amount_cents = price_list.price_cents(account.plan_monthly_credits, credits_mc)
        payment = open_payment(session, account_id, source="api", idempotency_key=idempotency_key or new_id("buy"),
                               credits_mc=credits_mc, amount_cents=amount_cents, currency=price_list.currency,
                               payment_method=payment_method, now=now)
        if payment.status == "error":
            retry(session, payment, now=now)
    payment = charge_payment(database, gateway, payment.id, now=now)
    if payment.status == "declined":
        raise PaymentDeclined(payment)
    if payment.status == "error":
        raise PaymentUnavailable(payment)
    return payment


def retry(session: Session, payment: Payment, *, now: datetime) -> None:
    """Start the next attempt of a payment whose last attempt took nothing (`error`)."""
    payment.status = "pending"
    payment.attempt += 1
    payment.charge_id = payment.decline_code = payment.failure_message = None
    payment.updated_at = now


def stale_payments(session: Session, *, source: str, now: datetime, older_than: timedelta) -> list[str]:
    """Payments still pending well after they were opened: a process died before recording the outcome."""
    return list(session.scalars(select(Payment.id).where(
        Payment.source == source, Payment.status == "pending", Payment.updated_at <= now - older_than,
    ).order_by(Payment.created_at).limit(500)))


def complete_stale_purchases(database: Database, gateway: PaymentGateway, *, now: datetime,
                             older_than: timedelta = timedelta(minutes=5)) -> int:
    """Finish API purchases left pending by a crash: same key, so at most one charge, then the grant."""
    with database.unit_of_work() as session:
        ids = stale_payments(session, source="api", now=now, older_than=older_than)
    for payment_id in ids:
        charge_payment(database, gateway, payment_id, now=now)
    return len(ids)


def payment_data(payment: Payment) -> dict:
    """A payment as its payment.succeeded / payment.failed event shows it."""
    return {"id": payment.id, "account_id": payment.account_id, "status": payment.status, "source": payment.source,
            "credits": format_credits(payment.credits), "amount_cents": payment.amount_cents,
            "currency": payment.currency, "charge_id": payment.charge_id, "decline_code": payment.decline_code,
            "failure_message": payment.failure_message, "lot_id": payment.lot_id}


def _description(payment: Payment) -> str:
    if payment.credits:
        return f"creditq: {format_credits(payment.credits)} credits ({payment.source})"
    return f"creditq: amount due ({payment.source})"


PAYMENT_STATUSES = ("pending", "succeeded", "declined", "error")


def find_payments(session: Session, account_id: str, *, purchases_only: bool = False, status: str | None = None,
                  source: str | None = None, created_after: datetime | None = None,
                  created_before: datetime | None = None, limit: int, before_id: str | None = None) -> list[Payment]:
    """The account's payments in descending id order; `purchases_only`: those buying credits (a bill's
    payment buys none)."""
    query = select(Payment).where(Payment.account_id == account_id)
    if purchases_only:
        query = query.where(Payment.credits > 0)
    if status is not None:
        query = query.where(Payment.status == status)
    if source is not None:
        query = query.where(Payment.source == source)
    if created_after is not None:
        query = query.where(Payment.created_at >= created_after)
    if created_before is not None:
        query = query.where(Payment.created_at < created_before)
    if before_id is not None:
        query = query.where(Payment.id < before_id)
    return list(session.scalars(query.order_by(Payment.id.desc()).limit(limit)))
