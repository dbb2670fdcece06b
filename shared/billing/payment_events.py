"""What the gateway tells us after the fact: webhook events, and the sweeper that asks about payments still open.

Events are verified at the edge (shared.billing.stripe_gateway.verify_event) and handled here once per event id
(`gateway_events`): a replay changes nothing. Every handler is also idempotent on its own, and never trusts the
event's copy of a PaymentIntent: it reads the PaymentIntent as it stands now, so duplicates and any order of
arrival end the same way.

- `payment_intent.*`: the payment's outcome (purchases.record_outcome; auto-recharge backoff and dunning follow);
- `charge.refunded` (full or partial): credits taken back pro rata, with a `refund` ledger entry per level;
- `charge.dispute.created`: what is left of the credits taken back (`dispute` entry); `charge.dispute.closed`
  won: given back as a purchase lot;
- `setup_intent.succeeded`, `checkout.session.completed`: the new card on file (auto_recharge.card_saved).
A take-back may leave the account below zero, which locks a prepaid account as any debt does.
"""

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from shared.asking import Asking
from shared.billing import auto_recharge, dunning
from shared.billing.payments import GatewayUnavailable, PaymentGateway
from shared.billing.purchases import (
    ACTION_WAITS,
    OPEN_STATUSES,
    Outcome,
    abandon_payment,
    charge_payment,
    record_outcome,
)
from shared.db import Database
from shared.ledger import book
from shared.ledger.expiry import utc
from shared.models import BillingCustomer, GatewayEvent, Payment

log = logging.getLogger(__name__)

SWEEP_AFTER = timedelta(minutes=2)  # CREDITQ_PAYMENT_SWEEP_SECONDS: an open payment this old lost its webhook or worker
_PAID = ("succeeded", "refunded", "disputed")


@dataclass(frozen=True)
class Handled:
    detail: str
    retry_dunning_run: str | None = None  # a new card arrived: pay this run now (the caller enqueues it)


def then_for(source: str) -> Outcome | None:
    """What follows a payment's outcome, by who made the payment."""
    return {"auto_recharge": auto_recharge.record_outcome, "dunning": dunning.record_payment}.get(source)


def handle_event(database: Database, gateway: PaymentGateway, event: dict, *, now: datetime) -> Handled:
    event_id, kind, obj = event["id"], event["type"], event["data"]["object"]
    with database.unit_of_work() as session:
        if session.get(GatewayEvent, event_id) is not None:
            return Handled("replayed: handled before")
    handled = _handle(database, gateway, kind, obj, now)
    try:
        with database.unit_of_work() as session:
            session.add(GatewayEvent(id=event_id, type=kind[:64], received_at=now))
    except IntegrityError:
        pass  # a duplicate delivered at the same moment: its twin recorded it
    return handled


def _handle(database: Database, gateway: PaymentGateway, kind: str, obj: dict, now: datetime) -> Handled:
    if kind.startswith("payment_intent."):
        payment = _payment(database, payment_id=(obj.get("metadata") or {}).get("payment_id"))
        if payment is None:
            return Handled("ignored: not a creditq payment")
        return Handled(f"payment {_reconciled(database, gateway, payment, now, intent_id=obj['id']).status}")
    if kind == "charge.refunded":
        return _refunded(database, gateway, obj, now)
    if kind == "charge.dispute.created":
        return _disputed(database, gateway, obj, now)
    if kind == "charge.dispute.closed":
        return _dispute_closed(database, obj, now)
    if kind == "setup_intent.succeeded":
        if (obj.get("metadata") or {}).get("purpose") != "card_on_file":
            return Handled("ignored: not a card on file")
        return _card_saved(database, obj.get("customer"), obj.get("payment_method"), now)
    if kind == "checkout.session.completed" and obj.get("mode") == "setup" and obj.get("setup_intent"):
        saved = gateway.saved_by_setup(obj["setup_intent"])
        return _card_saved(database, *saved, now) if saved else Handled("ignored: the setup did not succeed")
    return Handled(f"ignored: {kind} is not acted on")


def reconcile_open(database: Database, gateway: PaymentGateway, *, now: datetime,
                   older_than: timedelta = SWEEP_AFTER, limit: int = 500) -> int:
    """The sweeper: ask the gateway about every payment left open (a lost webhook, a crash between "PaymentIntent
    created" and "recorded") and finish it the way its own worker would have; one left waiting for 3-D Secure for
    ACTION_WAITS is canceled (abandon_payment). Returns how many it asked about. One payment the gateway will not
    answer for (an intent it does not know) is logged and left, not in the way of the others; a gateway that does not
    answer leaves the rest for the next sweep (shared.asking)."""
    with database.unit_of_work() as session:
        open_payments = list(session.execute(select(Payment.id, Payment.source, Payment.status, Payment.updated_at)
                                             .where(Payment.status.in_(OPEN_STATUSES),
                                                    Payment.updated_at <= now - older_than)
                                             .order_by(Payment.updated_at).limit(limit)))
    asking, asked = Asking(), 0
    for payment_id, source, status, updated_at in asking.each(open_payments):
        asked += 1
        finish = (abandon_payment if status == "requires_action" and utc(now) - utc(updated_at) >= ACTION_WAITS
                  else charge_payment)
        try:
            finish(database, gateway, payment_id, now=now, then=then_for(source))
        except GatewayUnavailable:
            asking.struggled()  # the next sweep asks again
        except Exception:
            log.exception("payment %s could not be reconciled; the next sweep asks again", payment_id)
    return asked


def _reconciled(database: Database, gateway: PaymentGateway, payment: Payment, now: datetime,
                intent_id: str | None = None) -> Payment:
    """The payment with its PaymentIntent's current state recorded (nothing to do when decided already)."""
    if payment.status not in OPEN_STATUSES:
        return payment
    result = gateway.find_intent(payment_id=payment.id, intent_id=payment.intent_id or intent_id)
    if result is None:
        return payment
    return record_outcome(database, payment.id, result, now=now, then=then_for(payment.source))


def _payment(database: Database, *, payment_id: str | None = None, intent_id: str | None = None) -> Payment | None:
    with database.unit_of_work() as session:
        if payment_id:
            return session.get(Payment, payment_id)
        if intent_id:
            return session.scalar(select(Payment).where(Payment.intent_id == intent_id))
    return None


def _refunded(database: Database, gateway: PaymentGateway, charge: dict, now: datetime) -> Handled:
    payment = _payment(database, intent_id=charge.get("payment_intent"))
    if payment is None:
        return Handled("ignored: not a creditq payment")
    _reconciled(database, gateway, payment, now)  # a refund that overtook the success: record the success first
    refunded_cents = int(charge.get("amount_refunded") or 0)
    with database.unit_of_work() as session:
        book.lock_account(session, payment.account_id)
        current = session.get(Payment, payment.id, with_for_update=True)
        if current.status not in _PAID or refunded_cents <= current.refunded_cents:
            return Handled("ignored: nothing newly refunded")
        refunded_cents = min(refunded_cents, current.amount_cents)
        share = current.credits * refunded_cents // current.amount_cents - \
            current.credits * current.refunded_cents // current.amount_cents
        taken = min(share, current.credits - current.clawed_back)
        if taken > 0:
            book.charge_pool(session, current.account_id, taken, kind="refund", reference=current.id,
                             idempotency_key=f"refund:{current.id}:{refunded_cents}", now=now)
        current.refunded_cents, current.clawed_back = refunded_cents, current.clawed_back + max(taken, 0)
        if current.status != "disputed":
            current.status = "refunded"
        current.updated_at = now
    return Handled(f"refund of {refunded_cents} cents: {taken} mc taken back")


def _disputed(database: Database, gateway: PaymentGateway, dispute: dict, now: datetime) -> Handled:
    payment = _payment(database, intent_id=dispute.get("payment_intent"))
    if payment is None:
        return Handled("ignored: not a creditq payment")
    _reconciled(database, gateway, payment, now)
    with database.unit_of_work() as session:
        book.lock_account(session, payment.account_id)
        current = session.get(Payment, payment.id, with_for_update=True)
        if current.status not in _PAID:
            return Handled("ignored: the payment did not succeed")
        taken = current.credits - current.clawed_back
        if taken > 0:
            book.charge_pool(session, current.account_id, taken, kind="dispute", reference=current.id,
                             idempotency_key=f"dispute:{dispute['id']}", now=now)
            current.clawed_back = current.credits
        current.status, current.updated_at = "disputed", now
    return Handled(f"disputed: {max(taken, 0)} mc taken back")


def _dispute_closed(database: Database, dispute: dict, now: datetime) -> Handled:
    payment = _payment(database, intent_id=dispute.get("payment_intent"))
    if payment is None or dispute.get("status") != "won":
        return Handled("ignored: not a creditq payment, or not won")
    with database.unit_of_work() as session:
        book.lock_account(session, payment.account_id)
        current = session.get(Payment, payment.id, with_for_update=True)
        if current.status != "disputed":
            return Handled("ignored: given back already")
        refund_share = current.credits * current.refunded_cents // current.amount_cents
        given = current.clawed_back - refund_share
        if given > 0:
            book.grant(session, current.account_id, given, "purchase", granted_at=now, reference=current.id,
                       idempotency_key=f"dispute_won:{dispute['id']}")
        current.clawed_back = refund_share
        current.status = "refunded" if current.refunded_cents else "succeeded"
        current.updated_at = now
    return Handled(f"dispute won: {max(given, 0)} mc given back")


def _card_saved(database: Database, customer: str | None, payment_method: str | None, now: datetime) -> Handled:
    with database.unit_of_work() as session:
        account_id = session.scalar(select(BillingCustomer.account_id).where(BillingCustomer.customer_id == customer))
        if account_id is None or not payment_method:
            return Handled("ignored: not a creditq customer")
        book.lock_account(session, account_id)  # account before run, as payments do
        unpaid_run = auto_recharge.card_saved(session, account_id, payment_method, now=now)
    return Handled(f"card on file for {account_id}", retry_dunning_run=unpaid_run)
