"""The payment gateway over the official `stripe` client, at STRIPE_API_BASE (Stripe, or the stand-in).

Every write carries an idempotency key; the client retries what did not answer (connection errors, 409s,
5xx) with the same key. A call that still gets no answer raises GatewayUnavailable: nothing is known, and the
caller retries later with the same key. A PaymentIntent is read back as it stands (`find_intent`) by its id or,
past Stripe's 24-hour idempotency window, by `metadata.payment_id` through the Search API.
"""

from datetime import UTC, datetime

import stripe

from shared.billing.payments import (
    CANCELED,
    Card,
    CardRefused,
    GatewayUnavailable,
    PaymentResult,
    SetupSession,
    unusable_payment_method,
)

NETWORK_RETRIES = 2
# How long one request waits for Stripe's answer (the client's own default is 80 s, three times over with its
# retries): a sweep or a job waiting on a stalled Stripe holds a worker's thread meanwhile. An answer that comes later
# is not lost: every write is retried with its idempotency key, and Stripe answers the first one's outcome.
TIMEOUT_SECONDS = 30.0
_UNANSWERED = (stripe.APIConnectionError, stripe.APIError, stripe.RateLimitError)


class InvalidEvent(ValueError):
    """A webhook whose signature does not verify (forged, or older than the tolerance), or that is not JSON."""


def verify_event(payload: bytes, signature: str | None, secret: str, *, tolerance: int = 300) -> dict:
    """Stripe's own check (`stripe.Webhook.construct_event`): the event as a dict, or InvalidEvent."""
    try:
        event = stripe.Webhook.construct_event(payload.decode("utf-8"), signature or "", secret, tolerance=tolerance)
    except (stripe.SignatureVerificationError, ValueError, UnicodeDecodeError) as error:
        raise InvalidEvent(str(error).splitlines()[0] if str(error) else "invalid event") from None
    return event.to_dict()


class StripeGateway:
    def __init__(self, api_key: str, api_base: str, *, timeout: float = TIMEOUT_SECONDS):
        self._stripe = stripe.StripeClient(api_key, base_addresses={"api": api_base},
                                           max_network_retries=NETWORK_RETRIES,
                                           http_client=stripe.new_default_http_client(timeout=timeout)).v1

    def create_customer(self, *, account_id: str, idempotency_key: str) -> str:
        with _answered():
            return self._stripe.customers.create(params={"metadata": {"account_id": account_id}},
                                                 options={"idempotency_key": idempotency_key}).id

    def check_payment_method(self, *, customer: str, payment_method: str) -> None:
        try:
            with _answered():
                method = self._stripe.payment_methods.retrieve(payment_method)
        except stripe.InvalidRequestError:
            raise unusable_payment_method() from None
        if method.customer is not None and method.customer != customer:
            raise unusable_payment_method()

    def save_card(self, *, customer: str, payment_method: str, idempotency_key: str) -> Card:
        self.check_payment_method(customer=customer, payment_method=payment_method)
        try:
            with _answered():
                intent = self._stripe.setup_intents.create(params={
                    "customer": customer, "payment_method": payment_method, "confirm": True, "usage": "off_session",
                    "payment_method_types": ["card"], "metadata": {"purpose": "card_on_file"},
                }, options={"idempotency_key": idempotency_key})
        except stripe.CardError as error:
            raise CardRefused(error.user_message or "Your card was declined.",
                              getattr(error.error, "decline_code", None) or error.code) from None
        return self.card(intent.payment_method)

    def card(self, payment_method: str) -> Card | None:
        try:
            with _answered():
                method = self._stripe.payment_methods.retrieve(payment_method)
        except stripe.InvalidRequestError:
            return None
        card = method.card
        return Card(method.id, card.brand, card.last4, card.exp_month, card.exp_year)

    def create_intent(self, *, payment_id: str, customer: str, amount_cents: int, currency: str,
                      payment_method: str, description: str, idempotency_key: str) -> str:
        try:
            with _answered():
                return self._stripe.payment_intents.create(params={
                    "amount": amount_cents, "currency": currency, "customer": customer,
                    "payment_method": payment_method, "payment_method_types": ["card"], "description": description,
                    "metadata": {"payment_id": payment_id},
                }, options={"idempotency_key": idempotency_key}).id
        except stripe.IdempotencyError:
            # The key's first create reached Stripe with other parameters (a release worded the description anew
            # meanwhile): the PaymentIntent it made is the payment's, found by its metadata.
            found = self.find_intent(payment_id=payment_id, intent_id=None)
            if found is None:  # Stripe's search shows a new intent within a minute
                raise GatewayUnavailable("Stripe's search does not show the intent its key made yet") from None
            return found.intent_id
        except stripe.InvalidRequestError as error:
            if error.param == "payment_method":
                raise unusable_payment_method() from None
            raise

    def confirm_intent(self, intent_id: str, *, off_session: bool, return_url: str,
                       idempotency_key: str) -> PaymentResult:
        params = {"off_session": True} if off_session else {"return_url": return_url}
        try:
            with _answered():
                return _result(self._stripe.payment_intents.confirm(intent_id, params=params,
                                                                    options={"idempotency_key": idempotency_key}))
        except stripe.CardError as error:
            intent = error.error.payment_intent
            code = getattr(error.error, "decline_code", None) or error.code
            status = "error" if error.code == "processing_error" else "declined"
            return PaymentResult(status, getattr(error.error, "charge", None), code,
                                 error.user_message, intent_id=intent.id if intent else intent_id)
        except stripe.IdempotencyError:
            # The key's first confirm reached Stripe with other parameters: the intake's, with the customer's
            # return_url, retried by a sweep that has none. The intent says how that confirm went.
            return self.find_intent(payment_id="", intent_id=intent_id)
        except stripe.InvalidRequestError as error:
            if error.code != "payment_intent_unexpected_state":
                raise
            return self.find_intent(payment_id="", intent_id=intent_id)  # confirmed already: read how it ended

    def find_intent(self, *, payment_id: str, intent_id: str | None) -> PaymentResult | None:
        with _answered():
            if intent_id is not None:
                return _result(self._stripe.payment_intents.retrieve(intent_id))
            found = self._stripe.payment_intents.search(params={"query": f"metadata['payment_id']:'{payment_id}'"})
        intents = sorted(found.data, key=lambda intent: intent.created)
        return _result(intents[-1]) if intents else None

    def cancel_intent(self, intent_id: str, *, idempotency_key: str) -> PaymentResult:
        try:
            with _answered():
                intent = self._stripe.payment_intents.cancel(intent_id, params={"cancellation_reason": "abandoned"},
                                                             options={"idempotency_key": idempotency_key})
        except stripe.InvalidRequestError as error:
            if error.code != "payment_intent_unexpected_state":
                raise
            return self.find_intent(payment_id="", intent_id=intent_id)  # decided first: read how it ended
        return _result(intent)

    def saved_by_setup(self, setup_intent_id: str) -> tuple[str, str] | None:
        """(customer, payment method) a succeeded SetupIntent saved, else None."""
        with _answered():
            intent = self._stripe.setup_intents.retrieve(setup_intent_id)
        if intent.status != "succeeded" or not intent.customer or not intent.payment_method:
            return None
        return intent.customer, intent.payment_method

    def setup_session(self, *, customer: str, account_id: str, success_url: str, cancel_url: str) -> SetupSession:
        with _answered():
            session = self._stripe.checkout.sessions.create(params={
                "mode": "setup", "customer": customer, "payment_method_types": ["card"], "success_url": success_url,
                "cancel_url": cancel_url, "client_reference_id": account_id,
                "metadata": {"account_id": account_id, "purpose": "card_on_file"},
                "setup_intent_data": {"metadata": {"account_id": account_id, "purpose": "card_on_file"}},
            })
        return SetupSession(session.id, session.url, datetime.fromtimestamp(session.expires_at, UTC))


def _result(intent) -> PaymentResult:
    """A PaymentIntent's state as one of the port's outcomes."""
    if intent.status == "succeeded":
        return PaymentResult("succeeded", intent.latest_charge, intent_id=intent.id)
    if intent.status == "requires_action":
        action = intent.next_action
        url = action.redirect_to_url.url if action and action.type == "redirect_to_url" else None
        return PaymentResult("requires_action", None, intent_id=intent.id, action_url=url)
    error = intent.last_payment_error
    if intent.status == "requires_payment_method" and error is not None:
        code = getattr(error, "decline_code", None) or getattr(error, "code", None)
        status = "error" if getattr(error, "code", None) == "processing_error" else "declined"
        return PaymentResult(status, getattr(error, "charge", None), code, error.message, intent_id=intent.id)
    if intent.status == "canceled":
        return PaymentResult("error", None, intent.cancellation_reason, CANCELED, intent_id=intent.id)
    return PaymentResult("processing", None, intent_id=intent.id)


class _answered:
    """No answer from Stripe (after the client's own retries) is GatewayUnavailable: the outcome is unknown."""

    def __enter__(self):
        return self

    def __exit__(self, kind, error, traceback):
        if error is not None and isinstance(error, _UNANSWERED):
            raise GatewayUnavailable(f"Stripe did not answer: {type(error).__name__}") from error
        return False
