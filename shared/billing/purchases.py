"""Paying for credits: a Payment row first, then the PaymentIntent, then (only on success) the purchased lot.

Four steps, each safe to die after:
1. open: a `pending` Payment under its idempotency key (a replay finds it);
2. create the PaymentIntent at the gateway with the key `<payment id>:<attempt>:create` and metadata.payment_id,
   and store its id (`processing`) — outside any transaction, never holding a lock;
3. confirm it with the key `<payment id>:<attempt>:confirm`;
4. one transaction records the outcome and, on success, grants the `purchase` lot (ledger key `payment:<id>`).
A process killed anywhere leaves the payment `pending` or `processing`; completing it repeats the same calls with
the same keys, so the gateway answers the first result instead of charging twice, and the grant follows. A payment
whose keys the gateway may have forgotten (Stripe keeps them 24 hours) is first looked up by metadata.payment_id.
An `error` (the gateway took nothing) ends the attempt; replaying the purchase starts attempt + 1.

The outcome may also arrive later, by webhook (shared.billing.payment_events): `record_outcome` is the one place
an outcome is written, whoever learns it first. Auto-recharge and dunning pay through the same steps, passing
`then` to act on the outcome in the transaction of step 4.
"""

import re
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from shared.billing.payments import GatewayUnavailable, PaymentGateway, PaymentResult
from shared.billing.price_list import PriceList, current_price_list
from shared.db import Database, any_of, insert_on_conflict
from shared.errors import Conflict, DomainError, NotFound, ValidationFailed
from shared.events.outbox import emit, takers
from shared.ids import new_id
from shared.ledger import book
from shared.ledger.expiry import utc
from shared.messaging import parking
from shared.models import Account, AutoRecharge, BillingCustomer, Payment
from shared.money import format_credits

SOURCES = ("api", "auto_recharge", "dunning", "month_end")
STATUSES = ("pending", "processing", "requires_action", "succeeded", "declined", "error", "refunded", "disputed")
OPEN_STATUSES = ("pending", "processing", "requires_action")  # the outcome is not known yet
ACTION_WAITS = timedelta(days=1)  # a payment waiting for 3-D Secure this long is canceled at the gateway
OUTCOME_EVENTS = ("payment.succeeded", "payment.failed")
KEYS_FORGOTTEN_AFTER = timedelta(hours=1)  # well inside Stripe's 24 hours: look the PaymentIntent up instead
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

    def __init__(self, payment: Payment | None, detail: str | None = None):
        super().__init__(detail or (payment and payment.failure_message)
                         or "The payment could not be processed; try again later.")
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
    return open_payments(session, [dict(
        id=payment_id, account_id=account_id, source=source, idempotency_key=idempotency_key, credits=credits_mc,
        amount_cents=amount_cents, currency=currency, payment_method=payment_method, dunning_run_id=dunning_run_id)],
        now=now)[0]


def open_payments(session: Session, terms: list[dict], *, now: datetime) -> list[Payment]:
    """open_payment for a batch (month-end's bills), one read for all their keys: each term a dict of Payment's
    columns (id None: a new id)."""
    keys = [term["idempotency_key"] for term in terms]
    found = {payment.idempotency_key: payment for payment in session.scalars(
        select(Payment).where(any_of(session, Payment.idempotency_key, keys)))}
    answers = []
    for term in terms:
        payment = found.get(term["idempotency_key"])
        if payment is None:
            payment = found[term["idempotency_key"]] = Payment(
                **{**term, "id": term.get("id") or new_id("pay")}, status="pending", attempt=0, created_at=now,
                updated_at=now)
            session.add(payment)
        elif (payment.account_id, payment.credits, payment.payment_method) != (
                term["account_id"], term["credits"], term["payment_method"]):
            raise Conflict("This idempotency key was used for a different payment.")
        answers.append(payment)
    session.flush()
    return answers


def in_play() -> ColumnElement[bool]:
    """Payments that took the money or may still take it: succeeded, or their outcome not known yet (one waiting for
    3-D Secure until the sweeper cancels it, ACTION_WAITS). What is owed is charged through one such payment at a
    time: were a new card on file to get a payment of its own while the first card's answer is lost, both would be
    charged."""
    return Payment.status.in_((*OPEN_STATUSES, "succeeded"))


def customer_of(database: Database, gateway: PaymentGateway, account_id: str, *, now: datetime) -> str:
    """The account's Customer at the gateway, made once (the same key answers the same Customer to a twin)."""
    with database.unit_of_work() as session:
        customer = session.scalar(select(BillingCustomer.customer_id).where(BillingCustomer.account_id == account_id))
    if customer is not None:
        return customer
    customer = gateway.create_customer(account_id=account_id, idempotency_key=f"customer:{account_id}")
    try:
        with database.unit_of_work() as session:
            session.add(BillingCustomer(account_id=account_id, customer_id=customer, created_at=now))
    except IntegrityError:
        pass  # a twin stored it first
    with database.unit_of_work() as session:
        return session.scalar(select(BillingCustomer.customer_id).where(BillingCustomer.account_id == account_id))


def charge_payment(database: Database, gateway: PaymentGateway, payment_id: str, *, now: datetime,
                   then: Outcome | None = None, return_url: str = "") -> Payment:
    """Create, confirm and record a payment whose outcome is not known yet; idempotent.

    A payment already decided is returned as it is; one waiting for 3-D Secure is read back, not confirmed
    again (the sweeper cancels it once it has waited ACTION_WAITS: abandon_payment). GatewayUnavailable (outcome
    unknown) propagates and leaves the payment open for a retry with the same keys.
    """
    with database.unit_of_work() as session:
        payment = session.get(Payment, payment_id)
        if payment is None:
            raise NotFound(f"No payment {payment_id}.")
    if payment.status not in OPEN_STATUSES:
        return payment
    if payment.status == "requires_action":
        result = gateway.find_intent(payment_id=payment.id, intent_id=payment.intent_id)
        return record_outcome(database, payment.id, result, now=now, then=then) if result else payment
    customer = customer_of(database, gateway, payment.account_id, now=now)
    intent_id = payment.intent_id
    if intent_id is None and utc(now) - utc(payment.updated_at) > KEYS_FORGOTTEN_AFTER:
        found = gateway.find_intent(payment_id=payment.id, intent_id=None)
        intent_id = found.intent_id if found else None
    if intent_id is None:
        intent_id = gateway.create_intent(payment_id=payment.id, customer=customer, amount_cents=payment.amount_cents,
                                          currency=payment.currency, payment_method=payment.payment_method,
                                          description=_description(payment),
                                          idempotency_key=f"{payment.id}:{payment.attempt}:create")
    with database.unit_of_work() as session:
        current = session.get(Payment, payment_id, with_for_update=True)
        if current.attempt != payment.attempt or current.status not in ("pending", "processing"):
            return current  # a twin moved on
        current.intent_id, current.status, current.updated_at = intent_id, "processing", now
    result = gateway.confirm_intent(intent_id, off_session=payment.source != "api", return_url=return_url,
                                    idempotency_key=f"{payment.id}:{payment.attempt}:confirm")
    return record_outcome(database, payment.id, result, now=now, then=then)


def abandon_payment(database: Database, gateway: PaymentGateway, payment_id: str, *, now: datetime,
                    then: Outcome | None = None) -> Payment:
    """A payment that waited ACTION_WAITS for 3-D Secure: read back, and canceled at the gateway if it still waits,
    so that a challenge finished days later takes nothing (were its webhook lost, no one would be left to grant the
    credits); one the customer finished or failed meanwhile is recorded as it ended. Idempotent like
    charge_payment: the cancel goes under its own key, and a cancel that comes second answers the intent as it is."""
    with database.unit_of_work() as session:
        payment = session.get(Payment, payment_id)
        if payment is None:
            raise NotFound(f"No payment {payment_id}.")
    if payment.status != "requires_action":
        return payment
    result = gateway.find_intent(payment_id=payment.id, intent_id=payment.intent_id)
    if result is not None and result.status == "requires_action":
        result = gateway.cancel_intent(result.intent_id, idempotency_key=f"{payment.id}:{payment.attempt}:cancel")
    return record_outcome(database, payment.id, result, now=now, then=then) if result else payment


def charge_payments(database: Database, gateway: PaymentGateway, payment_ids: list[str], *, now: datetime,
                    threads: int) -> dict[str, Payment]:
    """charge_payment for a batch (month-end's bills): the same gateway calls under the same keys, `threads` at a
    time, and each database step one transaction for the whole batch. A payment further along than `pending`
    with no PaymentIntent (or whose keys the gateway may have forgotten) takes charge_payment's own path. A
    payment whose call finds the gateway unavailable stays open, as it is, for the next collection."""
    with database.unit_of_work() as session:
        found = session.scalars(select(Payment).where(any_of(session, Payment.id, payment_ids))).all()
        customers = _customers(session, sorted({payment.account_id for payment in found}))
    fresh = [payment for payment in found if payment.status == "pending" and payment.intent_id is None
             and utc(now) - utc(payment.updated_at) <= KEYS_FORGOTTEN_AFTER]
    answers: dict[str, Payment] = {payment.id: payment for payment in found}
    with ThreadPoolExecutor(threads) as pool:  # the gateway's latency, not our CPU, is the cost of a call

        def each(call, items):
            return dict(zip(items, pool.map(lambda item: _unless_unavailable(call, item), items)))

        others = [payment.id for payment in found if payment not in fresh]
        answers.update({payment_id: outcome for payment_id, outcome in each(
            lambda payment_id: charge_payment(database, gateway, payment_id, now=now), others).items() if outcome})
        missing = sorted({payment.account_id for payment in fresh} - customers.keys())
        made = {account_id: customer for account_id, customer in each(
            lambda account_id: gateway.create_customer(account_id=account_id, idempotency_key=f"customer:{account_id}"),
            missing).items() if customer}
        if made:
            with database.unit_of_work() as session:
                session.execute(insert_on_conflict(session, BillingCustomer.__table__).on_conflict_do_nothing(), [
                    dict(account_id=account_id, customer_id=customer, created_at=now)
                    for account_id, customer in made.items()])
                customers.update(_customers(session, sorted(made)))  # a twin's, where one stored it first
        intents = {payment.id: intent for payment, intent in each(
            lambda payment: gateway.create_intent(
                payment_id=payment.id, customer=customers[payment.account_id], amount_cents=payment.amount_cents,
                currency=payment.currency, payment_method=payment.payment_method, description=_description(payment),
                idempotency_key=f"{payment.id}:{payment.attempt}:create"),
            [payment for payment in fresh if payment.account_id in customers]).items() if intent}
        with database.unit_of_work() as session:  # step 2's end: the intents stored, `processing`
            current = session.scalars(select(Payment).where(any_of(session, Payment.id, sorted(intents)))
                                      .order_by(Payment.id).with_for_update()).all()
            attempts = {payment.id: payment.attempt for payment in fresh}
            for payment in current:
                answers[payment.id] = payment
                if payment.attempt == attempts[payment.id] and payment.status in ("pending", "processing"):
                    payment.intent_id, payment.status, payment.updated_at = intents[payment.id], "processing", now
        processing = [payment for payment in current if payment.status == "processing"
                      and payment.intent_id == intents[payment.id] and payment.attempt == attempts[payment.id]]
        confirmed = {payment.id: result for payment, result in each(
            lambda payment: gateway.confirm_intent(payment.intent_id, off_session=payment.source != "api",
                                                   return_url="", idempotency_key=f"{payment.id}:{payment.attempt}:confirm"),
            processing).items() if result}
    if confirmed:
        answers.update(record_outcomes(database, list(confirmed.items()), now=now))
    return answers


def _customers(session: Session, account_ids: list[str]) -> dict[str, str]:
    return dict(session.execute(select(BillingCustomer.account_id, BillingCustomer.customer_id)
                                .where(any_of(session, BillingCustomer.account_id, account_ids))).all())


def _unless_unavailable(call, item):
    """The call's answer; None when the gateway was unavailable (the outcome is unknown: asked again later)."""
    try:
        return call(item)
    except GatewayUnavailable:
        return None


def record_outcome(database: Database, payment_id: str, result: PaymentResult, *, now: datetime,
                   then: Outcome | None = None) -> Payment:
    """Write what the gateway says of the payment's PaymentIntent, once: the confirmation's answer, a webhook and
    the sweeper all come here, in any order and as often as they like. A success grants the credits."""
    return record_outcomes(database, [(payment_id, result)], now=now, then=then)[payment_id]


def record_outcomes(database: Database, results: list[tuple[str, PaymentResult]], *, now: datetime,
                    then: Outcome | None = None) -> dict[str, Payment]:
    """record_outcome for a batch, in one transaction: the accounts locked first, in id order, then the payments
    (one lock order for every writer)."""
    ids = [payment_id for payment_id, _ in results]
    with database.unit_of_work() as session:
        account_ids = session.scalars(select(Payment.account_id).where(any_of(session, Payment.id, ids))).all()
        book.lock_accounts(session, account_ids)
        current = {payment.id: payment for payment in session.scalars(
            select(Payment).where(any_of(session, Payment.id, ids)).order_by(Payment.id).with_for_update())}
        if unknown := set(ids) - current.keys():
            raise NotFound(f"No payment {sorted(unknown)[0]}.")
        told = {event_type: takers(session, account_ids, event_type) for event_type in OUTCOME_EVENTS}
        for payment_id, result in results:
            _record(session, current[payment_id], result, now=now, then=then, told=told)
    for payment in current.values():
        if payment.status == "succeeded" and payment.credits:
            parking.credits_added(database, payment.account_id)  # an unlocked account's parked messages go out now
    return current


def _record(session: Session, current: Payment, result: PaymentResult, *, now: datetime,
            then: Outcome | None, told: dict[str, set[str]]) -> None:
    if current.status not in OPEN_STATUSES or result.intent_id != current.intent_id:
        return  # decided already, or about an attempt that is over
    if result.status == "processing" or result.status == current.status:
        return  # nothing new: a payment waiting for 3-D Secure keeps its age for the sweeper
    current.status = result.status
    current.charge_id = result.charge_id
    current.decline_code = result.decline_code
    current.failure_message = result.message
    current.action_url = result.action_url
    current.updated_at = now
    if result.status == "requires_action":
        return  # the customer finishes it; the webhook brings the outcome
    if result.succeeded and current.credits:
        lot = book.grant(session, current.account_id, current.credits, "purchase", granted_at=now,
                         reference=current.id, idempotency_key=f"payment:{current.id}")
        current.lot_id = lot.id
    event_type = "payment.succeeded" if result.succeeded else "payment.failed"
    if current.account_id in told[event_type]:  # asked of the batch at once: most accounts take neither
        emit(session, event_type, account_id=current.account_id, key=f"payment:{current.id}:{current.attempt}",
             data=payment_data(current), now=now)
    if then is not None:
        then(session, current)


def purchase(database: Database, gateway: PaymentGateway, account_id: str, credits_mc: int, payment_method: str, *,
             idempotency_key: str | None, now: datetime, price_list: PriceList | None = None,
             return_url: str = "") -> Payment:
    """Buy a bucket of credits; they land only when the charge succeeds (at once, or after 3-D Secure).

    Raises PaymentDeclined (402 at the edge), PaymentUnavailable (503; replaying the same key retries) or
    ValidationFailed for another account's payment method (nothing is charged).
    """
    price_list = price_list or current_price_list(database.engine)
    payment_method = check_payment_method(payment_method)
    with database.unit_of_work() as session:
        account = session.get(Account, account_id)
        if account is None:
            raise NotFound(f"No account {account_id}.")
        if account.spam:
            raise Conflict(f"Account {account_id} is flagged as spam: it cannot buy credits.")
        amount_cents = price_list.price_cents(account.plan_monthly_credits, credits_mc)
    try:
        customer = customer_of(database, gateway, account_id, now=now)
        gateway.check_payment_method(customer=customer, payment_method=payment_method)
    except GatewayUnavailable as unavailable:
        raise PaymentUnavailable(None, str(unavailable)) from None
    with database.unit_of_work() as session:
        payment = open_payment(session, account_id, source="api", idempotency_key=idempotency_key or new_id("buy"),
                               credits_mc=credits_mc, amount_cents=amount_cents, currency=price_list.currency,
                               payment_method=payment_method, now=now)
        if payment.status == "error":
            retry(session, payment, now=now)
    try:
        payment = charge_payment(database, gateway, payment.id, now=now, return_url=return_url)
    except GatewayUnavailable as unavailable:
        raise PaymentUnavailable(payment, str(unavailable)) from None
    if payment.status == "declined":
        raise PaymentDeclined(payment)
    if payment.status == "error":
        raise PaymentUnavailable(payment)
    return payment


def retry(session: Session, payment: Payment, *, now: datetime) -> None:
    """Start the next attempt of a payment whose last attempt took nothing (`error`)."""
    payment.status = "pending"
    payment.attempt += 1
    payment.charge_id = payment.decline_code = payment.failure_message = payment.intent_id = None
    payment.updated_at = now


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
