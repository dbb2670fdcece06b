"""Stripe's objects as the stand-in returns them: each starts from Stripe's own example of its resource
(fixtures.json) and sets what this request decided, so every field is there with Stripe's type.

Also Stripe's test PaymentMethod tokens (https://docs.stripe.com/testing) and what each card does.
"""

from __future__ import annotations

import copy
import json
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

FIXTURES = json.loads((Path(__file__).with_name("fixtures.json")).read_text())["resources"]


@dataclass(frozen=True)
class TestCard:
    brand: str
    last4: str
    outcome: str  # succeed | decline | authenticate | dispute | processing_error
    decline_code: str | None = None
    message: str | None = None
    refused_at_setup: bool = False  # the bank refuses to save it, as it refuses to charge it


_DECLINED = "Your card was declined."


def _refused(last4: str, code: str, message: str = _DECLINED) -> TestCard:
    """A card its bank declines, to charge and to save alike."""
    return TestCard("visa", last4, "decline", code, message, refused_at_setup=True)


TEST_CARDS = {
    "pm_card_visa": TestCard("visa", "4242", "succeed"),
    "pm_card_mastercard": TestCard("mastercard", "4444", "succeed"),
    "pm_card_amex": TestCard("amex", "8431", "succeed"),
    "pm_card_discover": TestCard("discover", "1117", "succeed"),
    "pm_card_us": TestCard("visa", "4242", "succeed"),
    "pm_card_chargeDeclined": _refused("0002", "generic_decline"),
    "pm_card_chargeDeclinedInsufficientFunds": _refused("9995", "insufficient_funds",
                                                        "Your card has insufficient funds."),
    "pm_card_chargeDeclinedLostCard": _refused("9987", "lost_card"),
    "pm_card_chargeDeclinedStolenCard": _refused("9979", "stolen_card"),
    "pm_card_chargeDeclinedExpiredCard": _refused("0069", "expired_card", "Your card has expired."),
    "pm_card_chargeDeclinedIncorrectCvc": _refused("0127", "incorrect_cvc", "Your card's security code is incorrect."),
    "pm_card_chargeDeclinedFraudulent": _refused("0019", "fraudulent"),
    "pm_card_chargeCustomerFail": TestCard("visa", "0341", "decline", "generic_decline", _DECLINED),  # saves fine
    "pm_card_chargeDeclinedProcessingError": TestCard("visa", "0119", "processing_error", None,
                                                      "An error occurred while processing your card. "
                                                      "Try again in a little bit."),
    "pm_card_authenticationRequired": TestCard("visa", "3184", "authenticate"),
    "pm_card_createDispute": TestCard("visa", "0259", "dispute"),
}


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_urlsafe(18).replace('-', 'x').replace('_', 'z')}"


def now() -> int:
    return int(time.time())


def _from_fixture(resource: str, **values) -> dict:
    obj = copy.deepcopy(FIXTURES[resource])
    unknown = set(values) - set(obj)
    if unknown:
        raise KeyError(f"{resource} has no field(s) {sorted(unknown)}")
    obj.update(values)
    return obj


def customer(*, email: str | None, name: str | None, metadata: dict) -> dict:
    return _from_fixture("customer", id=new_id("cus"), created=now(), email=email, name=name, metadata=metadata,
                         discount=None, shipping=None, address=None, description=None, currency=None,
                         invoice_prefix=secrets.token_hex(4).upper(),
                         invoice_settings={**FIXTURES["customer"]["invoice_settings"], "default_payment_method": None})


def payment_method(card: TestCard, *, customer_id: str | None) -> dict:
    template = FIXTURES["payment_method"]
    return _from_fixture(
        "payment_method", id=new_id("pm"), created=now(), customer=customer_id, metadata={},
        billing_details={**template["billing_details"], "email": None, "phone": None,
                         "address": {key: None for key in template["billing_details"]["address"]}},
        card={**template["card"], "brand": card.brand, "display_brand": card.brand, "last4": card.last4,
              "networks": {"available": [card.brand], "preferred": None}, "wallet": None, "generated_from": None,
              "fingerprint": secrets.token_urlsafe(12)[:16]})


def payment_intent(*, amount: int, currency: str, customer_id: str | None, payment_method_id: str | None,
                   description: str | None, metadata: dict, off_session: bool) -> dict:
    intent_id = new_id("pi")
    return _from_fixture(
        "payment_intent", id=intent_id, amount=amount, currency=currency, customer=customer_id,
        payment_method=payment_method_id, description=description, metadata=metadata, created=now(),
        client_secret=f"{intent_id}_secret_{secrets.token_urlsafe(12)}", canceled_at=None,
        status="requires_confirmation" if payment_method_id else "requires_payment_method",
        last_payment_error=None, next_action=None, processing=None, shipping=None, transfer_data=None,
        amount_details={"tip": {}}, automatic_payment_methods=None, payment_method_configuration_details=None,
        setup_future_usage="off_session" if off_session else None, managed_payments=None)


def charge(intent: dict, *, card: TestCard, payment_method_id: str, paid: bool, failure_code: str | None = None,
           failure_message: str | None = None) -> dict:
    template = FIXTURES["charge"]
    charge_id = new_id("ch")
    details = copy.deepcopy(template["payment_method_details"])
    details["card"].update(brand=card.brand, last4=card.last4, network=card.brand)
    return _from_fixture(
        "charge", id=charge_id, amount=intent["amount"], amount_captured=intent["amount"] if paid else 0,
        amount_refunded=0, created=now(), currency=intent["currency"], customer=intent["customer"],
        description=intent["description"], metadata=intent["metadata"], paid=paid, captured=paid,
        status="succeeded" if paid else "failed", payment_intent=intent["id"], payment_method=payment_method_id,
        payment_method_details=details, failure_code=failure_code, failure_message=failure_message,
        outcome={**template["outcome"], "type": "authorized" if paid else "issuer_declined",
                 "reason": None if paid else failure_code},
        balance_transaction=None, source=None, transfer_data=None, shipping=None, billing_details={
            **template["billing_details"], "name": None}, receipt_url=None, refunded=False, disputed=False,
        refunds={"data": [], "has_more": False, "object": "list", "url": f"/v1/charges/{charge_id}/refunds"})


def setup_intent(*, customer_id: str | None, payment_method_id: str | None, usage: str, metadata: dict) -> dict:
    intent_id = new_id("seti")
    return _from_fixture(
        "setup_intent", id=intent_id, created=now(), customer=customer_id, payment_method=payment_method_id,
        usage=usage, metadata=metadata, client_secret=f"{intent_id}_secret_{secrets.token_urlsafe(12)}",
        status="requires_confirmation" if payment_method_id else "requires_payment_method",
        last_setup_error=None, next_action=None, automatic_payment_methods=None,
        payment_method_configuration_details=None)


def checkout_session(*, customer_id: str, success_url: str, cancel_url: str | None, metadata: dict,
                     client_reference_id: str | None, url: str, session_id: str, expires_at: int) -> dict:
    return _from_fixture(
        "checkout.session", id=session_id, created=now(), expires_at=expires_at, customer=customer_id,
        success_url=success_url, cancel_url=cancel_url, metadata=metadata, client_reference_id=client_reference_id,
        mode="setup", payment_intent=None, setup_intent=None, status="open", payment_status="no_payment_required",
        url=url, currency=None, amount_subtotal=None, amount_total=None, after_expiration=None,
        automatic_tax={**FIXTURES["checkout.session"]["automatic_tax"], "liability": None},
        customer_details=None, invoice_creation=None, shipping_address_collection=None, shipping_cost=None,
        total_details=None, custom_text={key: None for key in FIXTURES["checkout.session"]["custom_text"]},
        consent=None, consent_collection=None, managed_payments=None, payment_method_configuration_details=None)


def refund(charge_obj: dict, *, amount: int, metadata: dict) -> dict:
    return _from_fixture("refund", id=new_id("re"), amount=amount, charge=charge_obj["id"], created=now(),
                         currency=charge_obj["currency"], payment_intent=charge_obj["payment_intent"],
                         metadata=metadata, status="succeeded", customer=charge_obj["customer"],
                         payment_method=charge_obj["payment_method"])


def dispute(charge_obj: dict) -> dict:
    return _from_fixture("dispute", id=new_id("dp"), amount=charge_obj["amount"], charge=charge_obj["id"],
                         created=now(), currency=charge_obj["currency"], payment_intent=charge_obj["payment_intent"],
                         status="needs_response", reason="fraudulent", metadata={})


def event(kind: str, obj: dict, *, previous_attributes: dict | None = None, idempotency_key: str | None = None) -> dict:
    data = {"object": obj}
    if previous_attributes is not None:
        data["previous_attributes"] = previous_attributes
    return _from_fixture("event", id=new_id("evt"), created=now(), type=kind, data=data, api_version="2025-01-27",
                         request={"id": new_id("req"), "idempotency_key": idempotency_key}, pending_webhooks=1)


def error(kind: str, message: str, *, code: str | None = None, decline_code: str | None = None,
          param: str | None = None, **extra) -> dict:
    body = {"type": kind, "message": message}
    for name, value in (("code", code), ("decline_code", decline_code), ("param", param)):
        if value is not None:
            body[name] = value
    return {"error": {**body, **extra}}
