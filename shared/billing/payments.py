"""The payment gateway port: charge a stored payment method once per idempotency key.

Amounts are integer cents. The outcome is one of three, and callers treat them differently:
`succeeded` (money taken: grant the credits), `declined` (the card said no: tell the customer, back off,
dun) and `error` (nothing was taken and nothing is known to be wrong with the card: retry later with the
same idempotency key). A real gateway (Stripe) keeps idempotency on its side, so a replay after a crash
returns the first answer instead of charging again; the simulated gateway does the same.
"""

import threading
from dataclasses import dataclass
from typing import Literal, Protocol

from shared.config import ConfigError, Settings
from shared.ids import new_id

PaymentStatus = Literal["succeeded", "declined", "error"]


@dataclass(frozen=True)
class PaymentResult:
    status: PaymentStatus
    charge_id: str | None  # set for succeeded and declined charges (a declined charge exists at Stripe too)
    decline_code: str | None = None  # Stripe's decline code, e.g. "insufficient_funds"
    message: str | None = None  # safe to show to the customer

    @property
    def succeeded(self) -> bool:
        return self.status == "succeeded"


class PaymentGateway(Protocol):
    def charge(self, *, account_id: str, amount_cents: int, currency: str = "usd", payment_method: str,
               idempotency_key: str, description: str) -> PaymentResult:
        """Charge once per idempotency_key: the same key answers the first result and never charges twice."""
        ...


@dataclass(frozen=True)
class Charge:
    """One charge the simulated gateway made (or refused), for tests and the dev console."""

    id: str
    account_id: str
    amount_cents: int
    currency: str
    payment_method: str
    idempotency_key: str
    description: str
    result: PaymentResult


# Stripe's test PaymentMethod tokens (https://docs.stripe.com/testing#declined-payments).
_DECLINES = {
    "pm_card_chargeDeclined": ("generic_decline", "Your card was declined."),
    "pm_card_chargeDeclinedInsufficientFunds": ("insufficient_funds", "Your card has insufficient funds."),
    "pm_card_chargeDeclinedLostCard": ("lost_card", "Your card was declined."),
    "pm_card_chargeDeclinedStolenCard": ("stolen_card", "Your card was declined."),
    "pm_card_chargeDeclinedExpiredCard": ("expired_card", "Your card has expired."),
    "pm_card_chargeDeclinedIncorrectCvc": ("incorrect_cvc", "Your card's security code is incorrect."),
    "pm_card_chargeDeclinedFraudulent": ("fraudulent", "Your card was declined."),
}
_SUCCEEDS = frozenset({"pm_card_visa", "pm_card_mastercard", "pm_card_amex", "pm_card_discover", "pm_card_us"})
_PROCESSING_ERROR = "pm_card_chargeDeclinedProcessingError"


class SimulatedGateway:
    """Stripe's test tokens, in memory: pm_card_visa succeeds, pm_card_chargeDeclined* decline,
    pm_card_chargeDeclinedProcessingError is a transient error. Thread-safe.

    An `error` is not remembered under its key (nothing reached the card), so a retry with the same key
    tries again — like a Stripe request that failed before its idempotent result was saved.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_key: dict[str, Charge] = {}
        self._charges: list[Charge] = []

    def charge(self, *, account_id: str, amount_cents: int, currency: str = "usd", payment_method: str,
               idempotency_key: str, description: str) -> PaymentResult:
        if isinstance(amount_cents, bool) or not isinstance(amount_cents, int) or amount_cents <= 0:
            raise ValueError(f"amount_cents must be a positive whole number of cents, not {amount_cents!r}")
        if not idempotency_key:
            raise ValueError("an idempotency_key is required")
        with self._lock:
            earlier = self._by_key.get(idempotency_key)
            if earlier is not None:
                return earlier.result
            result = self._decide(payment_method)
            if result.status == "error":
                return result
            charge = Charge(result.charge_id, account_id, amount_cents, currency, payment_method, idempotency_key,
                            description, result)
            self._by_key[idempotency_key] = charge
            self._charges.append(charge)
            return result

    def charges(self, account_id: str | None = None, *, status: PaymentStatus | None = None) -> list[Charge]:
        """Every charge made, oldest first; tests assert "charged once" with this."""
        with self._lock:
            return [c for c in self._charges
                    if (account_id is None or c.account_id == account_id)
                    and (status is None or c.result.status == status)]

    @staticmethod
    def _decide(payment_method: str) -> PaymentResult:
        if payment_method in _SUCCEEDS:
            return PaymentResult("succeeded", new_id("ch"))
        if payment_method == _PROCESSING_ERROR:
            return PaymentResult("error", None, "processing_error",
                                 "An error occurred while processing your card. Try again in a little bit.")
        if payment_method in _DECLINES:
            code, message = _DECLINES[payment_method]
            return PaymentResult("declined", new_id("ch"), code, message)
        return PaymentResult("declined", None, "resource_missing", f"No such PaymentMethod: {payment_method!r}")


_simulated = SimulatedGateway()


def gateway_from_settings(settings: Settings) -> PaymentGateway:
    """The process's gateway. "simulated" (the default) is one in-memory gateway shared by the whole process."""
    name = settings.payment_gateway
    if name == "simulated":
        return _simulated
    raise ConfigError(f"PAYMENT_GATEWAY={name!r} is not supported; use 'simulated'")
