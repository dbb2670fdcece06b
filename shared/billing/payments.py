"""The payment gateway port: Customers, cards saved for later, and PaymentIntents made once per idempotency key.

Amounts are integer cents. A payment is created at the gateway first (its id stored), then confirmed; each
call carries an idempotency key derived from our payment id, and the PaymentIntent carries that id in its
metadata, so a retry after a crash finds the first one instead of charging again, even after the gateway
forgot the key (`find_intent`). A confirmation ends in one of five outcomes, and callers treat them apart:
`succeeded` (money taken: grant the credits), `declined` (the card said no: tell the customer, back off,
dun), `error` (nothing was taken and nothing is known to be wrong with the card: a later attempt may
succeed), `requires_action` (3-D Secure: the customer finishes at `action_url`) and `processing` (the
outcome arrives later, by webhook or the sweeper).

`stripe` (shared.billing.stripe_gateway) is the gateway; `simulated` here is an in-memory one for unit tests
(shared.billing.gateways picks one).
"""

import threading
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal, Protocol

from shared.errors import Conflict, DomainError, ValidationFailed
from shared.ids import new_id

PaymentStatus = Literal["succeeded", "declined", "error", "requires_action", "processing"]
CANCELED = "The payment was canceled; nothing was taken."  # a canceled PaymentIntent's message, for the customer


@dataclass(frozen=True)
class PaymentResult:
    status: PaymentStatus
    charge_id: str | None  # set for succeeded and declined charges (a declined charge exists at Stripe too)
    decline_code: str | None = None  # Stripe's decline code, e.g. "insufficient_funds"
    message: str | None = None  # safe to show to the customer
    intent_id: str | None = None
    action_url: str | None = None  # requires_action: where the customer authenticates

    @property
    def succeeded(self) -> bool:
        return self.status == "succeeded"


@dataclass(frozen=True)
class Card:
    """A saved card as the customer recognises it."""

    payment_method: str
    brand: str
    last4: str
    exp_month: int
    exp_year: int


@dataclass(frozen=True)
class SetupSession:
    """A hosted page (Stripe Checkout in setup mode) where the customer saves a card."""

    id: str
    url: str
    expires_at: datetime


class CardRefused(DomainError):
    """The card could not be saved (the bank refused it): 402 at the edge, with its decline code."""

    title = "Card declined"

    def __init__(self, message: str, decline_code: str | None):
        super().__init__(message)
        self.decline_code = decline_code


class GatewayUnavailable(DomainError):
    """The gateway did not answer: nothing is known to have happened; the same call may be retried."""

    title = "Payment gateway unavailable"


def unusable_payment_method() -> ValidationFailed:
    """Another account's card and an id the gateway does not know answer alike: no account learns whether
    another's card id exists."""
    reason = "is not a payment method of this account"
    return ValidationFailed(f"payment_method {reason}", errors={"payment_method": reason})


class PaymentGateway(Protocol):
    def create_customer(self, *, account_id: str, idempotency_key: str) -> str:
        """The Customer for an account (`cus_...`); the same key answers the same Customer."""
        ...

    def check_payment_method(self, *, customer: str, payment_method: str) -> None:
        """ValidationFailed when the PaymentMethod is saved to another Customer: never charge another's card."""
        ...

    def save_card(self, *, customer: str, payment_method: str, idempotency_key: str) -> Card:
        """Save a card to the Customer for later, off-session payments (a SetupIntent); CardRefused if refused."""
        ...

    def card(self, payment_method: str) -> Card | None:
        ...

    def create_intent(self, *, payment_id: str, customer: str, amount_cents: int, currency: str,
                      payment_method: str, description: str, idempotency_key: str) -> str:
        """Create (not yet confirm) a PaymentIntent with metadata.payment_id; returns its id."""
        ...

    def confirm_intent(self, intent_id: str, *, off_session: bool, return_url: str,
                       idempotency_key: str) -> PaymentResult:
        ...

    def find_intent(self, *, payment_id: str, intent_id: str | None) -> PaymentResult | None:
        """The PaymentIntent as it stands now, by its id or else by metadata.payment_id; None if there is none."""
        ...

    def cancel_intent(self, intent_id: str, *, idempotency_key: str) -> PaymentResult:
        """Cancel a PaymentIntent that has not taken the money, so it never can (3-D Secure left unfinished): an
        `error` that took nothing, or the intent as it stands if it was decided first (the customer finished)."""
        ...

    def setup_session(self, *, customer: str, account_id: str, success_url: str, cancel_url: str) -> SetupSession:
        """A hosted page where the customer saves a card (Checkout in setup mode)."""
        ...

    def saved_by_setup(self, setup_intent_id: str) -> tuple[str, str] | None:
        """(customer, payment method) a succeeded SetupIntent saved, else None."""
        ...


# Stripe's test PaymentMethod tokens (https://docs.stripe.com/testing#declined-payments).
_DECLINES = {
    "pm_card_chargeDeclined": ("generic_decline", "Your card was declined."),
    "pm_card_chargeCustomerFail": ("generic_decline", "Your card was declined."),
    "pm_card_chargeDeclinedInsufficientFunds": ("insufficient_funds", "Your card has insufficient funds."),
    "pm_card_chargeDeclinedLostCard": ("lost_card", "Your card was declined."),
    "pm_card_chargeDeclinedStolenCard": ("stolen_card", "Your card was declined."),
    "pm_card_chargeDeclinedExpiredCard": ("expired_card", "Your card has expired."),
    "pm_card_chargeDeclinedIncorrectCvc": ("incorrect_cvc", "Your card's security code is incorrect."),
    "pm_card_chargeDeclinedFraudulent": ("fraudulent", "Your card was declined."),
}
_SUCCEEDS = frozenset({"pm_card_visa", "pm_card_mastercard", "pm_card_amex", "pm_card_discover", "pm_card_us"})
_PROCESSING_ERROR = "pm_card_chargeDeclinedProcessingError"
_AUTHENTICATE = "pm_card_authenticationRequired"


@dataclass(frozen=True)
class Charge:
    """One confirmation the simulated gateway answered (not an `error`), for tests."""

    id: str
    account_id: str
    amount_cents: int
    currency: str
    payment_method: str
    idempotency_key: str
    description: str
    result: PaymentResult


@dataclass
class _Intent:
    id: str
    payment_id: str
    customer: str
    amount_cents: int
    currency: str
    payment_method: str
    description: str
    result: PaymentResult | None = None
    confirmations: dict[str, PaymentResult] = field(default_factory=dict)


class SimulatedGateway:
    """Stripe's test tokens, in memory, for unit tests: pm_card_visa succeeds, pm_card_chargeDeclined* decline,
    pm_card_chargeDeclinedProcessingError is a transient error, pm_card_authenticationRequired asks for 3-D Secure
    (declined off-session). Idempotent per key like Stripe; an `error` is not remembered (nothing reached the card).
    Thread-safe. Refused when CREDITQ_ENV=production.
    """

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._customers: dict[str, str] = {}  # idempotency key -> customer
        self._accounts: dict[str, str] = {}  # customer -> account
        self._saved: dict[str, tuple[str, str]] = {}  # saved pm id -> (customer, test token)
        self._intents: dict[str, _Intent] = {}
        self._intent_keys: dict[str, str] = {}
        self._charges: list[Charge] = []

    def create_customer(self, *, account_id: str, idempotency_key: str) -> str:
        with self._lock:
            customer = self._customers.setdefault(idempotency_key, new_id("cus"))
            self._accounts[customer] = account_id
            return customer

    def check_payment_method(self, *, customer: str, payment_method: str) -> None:
        with self._lock:
            owner = self._saved.get(payment_method, (None,))[0]
        if owner is not None and owner != customer:
            raise unusable_payment_method()

    def save_card(self, *, customer: str, payment_method: str, idempotency_key: str) -> Card:
        self.check_payment_method(customer=customer, payment_method=payment_method)
        token = self._token(payment_method)
        if token in _DECLINES and token != "pm_card_chargeCustomerFail":
            raise CardRefused(_DECLINES[token][1], _DECLINES[token][0])
        with self._lock:
            saved = new_id("pm")
            self._saved[saved] = (customer, token)
        return self._card(saved, token)

    def card(self, payment_method: str) -> Card | None:
        return self._card(payment_method, self._token(payment_method))

    def create_intent(self, *, payment_id: str, customer: str, amount_cents: int, currency: str,
                      payment_method: str, description: str, idempotency_key: str) -> str:
        if isinstance(amount_cents, bool) or not isinstance(amount_cents, int) or amount_cents <= 0:
            raise ValueError(f"amount_cents must be a positive whole number of cents, not {amount_cents!r}")
        with self._lock:
            if idempotency_key in self._intent_keys:
                return self._intent_keys[idempotency_key]
            intent = _Intent(new_id("pi"), payment_id, customer, amount_cents, currency, payment_method, description)
            self._intents[intent.id] = intent
            self._intent_keys[idempotency_key] = intent.id
            return intent.id

    def confirm_intent(self, intent_id: str, *, off_session: bool, return_url: str,
                       idempotency_key: str) -> PaymentResult:
        with self._lock:
            intent = self._intents[intent_id]
            if idempotency_key in intent.confirmations:
                return intent.confirmations[idempotency_key]
            if intent.result is not None and intent.result.status in ("succeeded", "requires_action"):
                return intent.result
            result = self._decide(intent, self._token(intent.payment_method), off_session)
            if result.status == "error":
                return result
            intent.result = intent.confirmations[idempotency_key] = result
            self._charges.append(Charge(result.charge_id or intent.id, self._accounts.get(intent.customer, ""),
                                        intent.amount_cents, intent.currency, intent.payment_method,
                                        idempotency_key, intent.description, result))
            return result

    def find_intent(self, *, payment_id: str, intent_id: str | None) -> PaymentResult | None:
        with self._lock:
            found = [i for i in self._intents.values() if i.id == intent_id or i.payment_id == payment_id]
        if not found:
            return None
        intent = found[0]
        return intent.result or PaymentResult("processing", None, intent_id=intent.id)

    def cancel_intent(self, intent_id: str, *, idempotency_key: str) -> PaymentResult:
        with self._lock:
            intent = self._intents[intent_id]
            if intent.result is None or intent.result.status == "requires_action":
                intent.result = PaymentResult("error", None, "abandoned", CANCELED, intent_id=intent.id)
            return intent.result

    def setup_session(self, *, customer: str, account_id: str, success_url: str, cancel_url: str) -> SetupSession:
        raise Conflict("The simulated gateway has no hosted pages: run with PAYMENT_GATEWAY=stripe (the Stripe "
                       "stand-in in development).")

    def saved_by_setup(self, setup_intent_id: str) -> tuple[str, str] | None:
        return None  # it makes no SetupIntents of its own

    def charges(self, account_id: str | None = None, *, status: PaymentStatus | None = None) -> list[Charge]:
        """Every confirmation answered, oldest first; tests assert "charged once" with this."""
        with self._lock:
            return [c for c in self._charges
                    if (account_id is None or c.account_id == account_id)
                    and (status is None or c.result.status == status)]

    def _token(self, payment_method: str) -> str:
        with self._lock:
            return self._saved.get(payment_method, (None, payment_method))[1]

    @staticmethod
    def _card(payment_method: str, token: str) -> Card:
        return Card(payment_method, "visa", "4242" if token in _SUCCEEDS else "0002", 12, 2034)

    @staticmethod
    def _decide(intent: _Intent, token: str, off_session: bool) -> PaymentResult:
        if token in _SUCCEEDS:
            return PaymentResult("succeeded", new_id("ch"), intent_id=intent.id)
        if token == _AUTHENTICATE and not off_session:
            return PaymentResult("requires_action", None, intent_id=intent.id,
                                 action_url=f"https://simulated.invalid/authenticate/{intent.id}")
        if token == _AUTHENTICATE:
            return PaymentResult("declined", new_id("ch"), "authentication_required",
                                 "Your card was declined. This transaction requires authentication.",
                                 intent_id=intent.id)
        if token == _PROCESSING_ERROR:
            return PaymentResult("error", None, "processing_error",
                                 "An error occurred while processing your card. Try again in a little bit.",
                                 intent_id=intent.id)
        if token in _DECLINES:
            code, message = _DECLINES[token]
            return PaymentResult("declined", new_id("ch"), code, message, intent_id=intent.id)
        return PaymentResult("declined", None, "resource_missing", f"No such PaymentMethod: {token!r}",
                             intent_id=intent.id)
