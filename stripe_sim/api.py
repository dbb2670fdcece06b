"""Stripe's API as the stand-in serves it: form-encoded requests, JSON objects, Idempotency-Key replays.

Every handler is synchronous over the store and runs inside one transaction with the answer kept for
its key, so a replay (a client retry, a restart) answers the first result and never makes a second object.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import time

from aiohttp import web

from . import resources as r
from .state import config_key, store_key
from .store import Store

routes = web.RouteTableDef()
CHECKOUT_TTL_SECONDS = 24 * 3600


class StripeError(Exception):
    def __init__(self, status: int, body: dict):
        super().__init__(body["error"]["message"])
        self.status, self.body = status, body


def invalid(message: str, *, param: str | None = None, code: str | None = None) -> StripeError:
    return StripeError(400, r.error("invalid_request_error", message, param=param, code=code))


def missing(kind: str, object_id: str, param: str = "id") -> StripeError:
    return StripeError(404, r.error("invalid_request_error", f"No such {kind}: '{object_id}'", param=param,
                                    code="resource_missing"))


def parse_form(pairs) -> dict:
    """Stripe's encoding: `metadata[payment_id]=x`, `payment_method_types[0]=card`, nested at will."""
    root: dict = {}
    for key, value in pairs:
        parts = re.findall(r"[^\[\]]+", key)
        node = root
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return _lists(root)


def _lists(node):
    if isinstance(node, dict):
        if node and all(key.isdigit() for key in node):
            return [_lists(node[key]) for key in sorted(node, key=int)]
        return {key: _lists(value) for key, value in node.items()}
    return node


def _flag(value) -> bool:
    return str(value).lower() == "true"


def _amount(value, param: str = "amount") -> int:
    if not (isinstance(value, str) and value.isdigit() and 0 < int(value) < 10**10):
        raise invalid(f"Invalid integer: {value}", param=param)
    return int(value)


async def handle(request: web.Request, work) -> web.Response:
    """Authenticate, replay or run `work(store, params)` in one transaction, then answer (after the delay knob)."""
    config = request.app[config_key]
    if request.headers.get("Authorization") != f"Bearer {config.api_key}":
        return web.json_response(r.error("invalid_request_error", "Invalid API Key provided."), status=401)
    params = parse_form((await request.post()).items() if request.method == "POST" else request.query.items())
    store: Store = request.app[store_key]
    key = request.headers.get("Idempotency-Key") if request.method == "POST" else None
    fingerprint = hashlib.sha256(json.dumps([request.path, params], sort_keys=True).encode()).hexdigest()
    with store.transaction():
        kept = store.answer_for(key) if key else None
        if kept is not None:
            status, body = kept[1], kept[2]
            if kept[0] != fingerprint:
                status, body = 400, r.error("idempotency_error", "Keys for idempotent requests can only be used "
                                            "with the same parameters they were first used with.")
            replayed = True
        else:
            replayed = False
            try:
                status, body = 200, work(store, params, key, request)
            except StripeError as error:
                status, body = error.status, error.body
            if key:
                store.keep_answer(key, fingerprint, status, body)
    if config.response_delay_ms and not replayed:
        await asyncio.sleep(config.response_delay_ms / 1000)
    headers = {"Idempotent-Replayed": "true"} if replayed else {}
    return web.json_response(body, status=status, headers=headers)


def emit(store: Store, request: web.Request, kind: str, obj: dict, **extra) -> None:
    delay = request.app[config_key].event_delay_ms / 1000
    store.add_event(r.event(kind, obj, **extra), time.time() + delay)


def public_url(request: web.Request) -> str:
    return request.app[config_key].public_url or str(request.url.origin())


# --- customers and payment methods ------------------------------------------------------------------

@routes.post("/v1/customers")
async def create_customer(request):
    def work(store, params, key, request):
        return store.put(r.customer(email=params.get("email"), name=params.get("name"),
                                    metadata=params.get("metadata", {})), idempotency_key=key)
    return await handle(request, work)


@routes.get("/v1/customers/{id}")
async def get_customer(request):
    return await handle(request, lambda store, *_: _get(store, request.match_info["id"], "customer"))


def _get(store: Store, object_id: str, kind: str) -> dict:
    obj = store.get(object_id, kind)
    if obj is None:
        raise missing(kind, object_id)
    return obj


def resolve_payment_method(store: Store, token: str, customer_id: str | None) -> tuple[dict, r.TestCard]:
    """A test token makes a fresh PaymentMethod (as Stripe does); an id must not be another Customer's."""
    if token in r.TEST_CARDS:
        card = r.TEST_CARDS[token]
        return store.put(r.payment_method(card, customer_id=None), card=token), card
    method = store.get(token, "payment_method")
    if method is None:
        raise missing("PaymentMethod", token, "payment_method")
    if method["customer"] is not None and method["customer"] != customer_id:
        raise invalid("The provided PaymentMethod belongs to a different Customer.", param="payment_method")
    return method, r.TEST_CARDS[store.card_of(token)]


@routes.get("/v1/payment_methods/{id}")
async def get_payment_method(request):
    def work(store, params, key, request):
        object_id = request.match_info["id"]
        if object_id in r.TEST_CARDS:
            return r.payment_method(r.TEST_CARDS[object_id], customer_id=None)
        return _get(store, object_id, "payment_method")
    return await handle(request, work)


@routes.post("/v1/payment_methods/{id}/attach")
async def attach_payment_method(request):
    def work(store, params, key, request):
        customer_id = params.get("customer")
        _get(store, customer_id or "", "customer")
        method, _ = resolve_payment_method(store, request.match_info["id"], customer_id)
        method["customer"] = customer_id
        return store.put(method)
    return await handle(request, work)


# --- setup intents ----------------------------------------------------------------------------------

@routes.post("/v1/setup_intents")
async def create_setup_intent(request):
    def work(store, params, key, request):
        customer_id = params.get("customer")
        if customer_id is not None:
            _get(store, customer_id, "customer")
        intent = r.setup_intent(customer_id=customer_id, payment_method_id=None,
                                usage=params.get("usage", "off_session"), metadata=params.get("metadata", {}))
        if params.get("payment_method"):
            method, card = resolve_payment_method(store, params["payment_method"], customer_id)
            intent["payment_method"], intent["status"] = method["id"], "requires_confirmation"
            if _flag(params.get("confirm")):
                return confirm_setup(store, request, intent, method, card)
        return store.put(intent, idempotency_key=key)
    return await handle(request, work)


def confirm_setup(store: Store, request, intent: dict, method: dict, card: r.TestCard) -> dict:
    """Save the card for later: a card that is always declined fails here, as at Stripe; the rest attach."""
    if card.refused_at_setup:
        intent["status"] = "requires_payment_method"
        intent["last_setup_error"] = {"type": "card_error", "code": "card_declined", "decline_code": card.decline_code,
                                      "message": card.message}
        store.put(intent)
        emit(store, request, "setup_intent.setup_failed", intent)
        raise StripeError(402, r.error("card_error", card.message, code="card_declined",
                                       decline_code=card.decline_code, setup_intent=intent))
    method["customer"] = intent["customer"]
    store.put(method)
    intent["status"] = "succeeded"
    store.put(intent)
    emit(store, request, "setup_intent.succeeded", intent)
    return intent


@routes.get("/v1/setup_intents/{id}")
async def get_setup_intent(request):
    return await handle(request, lambda store, *_: _get(store, request.match_info["id"], "setup_intent"))


# --- payment intents --------------------------------------------------------------------------------

@routes.post("/v1/payment_intents")
async def create_payment_intent(request):
    def work(store, params, key, request):
        customer_id = params.get("customer")
        if customer_id is not None:
            _get(store, customer_id, "customer")
        method_id = None
        if params.get("payment_method"):
            method_id = resolve_payment_method(store, params["payment_method"], customer_id)[0]["id"]
        intent = r.payment_intent(amount=_amount(params.get("amount")), currency=params.get("currency", "usd"),
                                  customer_id=customer_id, payment_method_id=method_id,
                                  description=params.get("description"), metadata=params.get("metadata", {}),
                                  off_session=_flag(params.get("off_session")))
        store.put(intent, idempotency_key=key)
        emit(store, request, "payment_intent.created", intent)
        if _flag(params.get("confirm")):
            return confirm_payment(store, request, intent, params)
        return intent
    return await handle(request, work)


@routes.post("/v1/payment_intents/{id}/confirm")
async def confirm_payment_intent(request):
    def work(store, params, key, request):
        intent = _get(store, request.match_info["id"], "payment_intent")
        if params.get("payment_method"):
            method, _ = resolve_payment_method(store, params["payment_method"], intent["customer"])
            intent["payment_method"] = method["id"]
        return confirm_payment(store, request, intent, params)
    return await handle(request, work)


def confirm_payment(store: Store, request, intent: dict, params: dict) -> dict:
    if intent["status"] not in ("requires_confirmation", "requires_payment_method"):
        raise StripeError(400, r.error("invalid_request_error", "This PaymentIntent's status is "
                                       f"{intent['status']}; it cannot be confirmed.",
                                       code="payment_intent_unexpected_state", payment_intent=intent))
    if not intent["payment_method"]:
        raise invalid("You must provide a payment method to confirm this PaymentIntent.", param="payment_method")
    method = store.get(intent["payment_method"], "payment_method")
    card = r.TEST_CARDS[store.card_of(method["id"])]
    off_session = _flag(params.get("off_session"))
    if card.outcome == "authenticate" and not off_session:
        intent["status"] = "requires_action"
        intent["next_action"] = {"type": "redirect_to_url", "redirect_to_url": {
            "url": f"{public_url(request)}/authenticate/{intent['id']}", "return_url": params.get("return_url")}}
        store.put(intent)
        emit(store, request, "payment_intent.requires_action", intent)
        return intent
    if card.outcome in ("succeed", "dispute"):
        return succeed(store, request, intent, card)
    code, decline_code, message = {
        "authenticate": ("authentication_required", "authentication_required",
                         "Your card was declined. This transaction requires authentication."),
        "processing_error": ("processing_error", None, card.message),
    }.get(card.outcome, ("card_declined", card.decline_code, card.message))
    charge = store.put(r.charge(intent, card=card, payment_method_id=method["id"], paid=False, failure_code=code,
                                failure_message=message))
    intent.update(status="requires_payment_method", latest_charge=charge["id"], last_payment_error={
        "type": "card_error", "code": code, "decline_code": decline_code, "message": message, "charge": charge["id"],
        "payment_method": method})
    store.put(intent)
    emit(store, request, "payment_intent.payment_failed", intent)
    raise StripeError(402, r.error("card_error", message, code=code, decline_code=decline_code, charge=charge["id"],
                                   payment_intent=intent))


def succeed(store: Store, request, intent: dict, card: r.TestCard) -> dict:
    charge = store.put(r.charge(intent, card=card, payment_method_id=intent["payment_method"], paid=True))
    intent.update(status="succeeded", amount_received=intent["amount"], latest_charge=charge["id"], next_action=None,
                  last_payment_error=None)
    store.put(intent)
    emit(store, request, "charge.succeeded", charge)
    emit(store, request, "payment_intent.succeeded", intent)
    if card.outcome == "dispute":
        open_dispute(store, request, charge)
    return intent


def open_dispute(store: Store, request, charge: dict) -> dict:
    dispute = store.put(r.dispute(charge))
    charge["disputed"] = True
    store.put(charge)
    emit(store, request, "charge.dispute.created", dispute)
    return dispute


CANCELABLE = ("requires_payment_method", "requires_capture", "requires_confirmation", "requires_action", "processing")
CANCELLATION_REASONS = ("duplicate", "fraudulent", "requested_by_customer", "abandoned")


@routes.post("/v1/payment_intents/{id}/cancel")
async def cancel_payment_intent(request):
    def work(store, params, key, request):
        intent = _get(store, request.match_info["id"], "payment_intent")
        reason = params.get("cancellation_reason")
        if reason is not None and reason not in CANCELLATION_REASONS:
            raise invalid(f"Invalid cancellation_reason: must be one of {', '.join(CANCELLATION_REASONS)}",
                          param="cancellation_reason")
        if intent["status"] not in CANCELABLE:
            raise StripeError(400, r.error(
                "invalid_request_error", f"You cannot cancel this PaymentIntent because it has a status of "
                f"{intent['status']}. Only a PaymentIntent with one of the following statuses may be canceled: "
                f"{', '.join(CANCELABLE)}.", code="payment_intent_unexpected_state", payment_intent=intent))
        intent.update(status="canceled", canceled_at=r.now(), cancellation_reason=reason, next_action=None)
        store.put(intent)
        emit(store, request, "payment_intent.canceled", intent)
        return intent
    return await handle(request, work)


@routes.get("/v1/payment_intents/search")
async def search_payment_intents(request):
    def work(store, params, key, request):
        match = re.fullmatch(r"metadata\['([^']+)'\]:'([^']*)'", params.get("query", "").strip())
        if match is None:
            raise invalid("The stand-in searches by one metadata field: metadata['key']:'value'.", param="query")
        found = [intent for intent in store.all("payment_intent")
                 if intent["metadata"].get(match.group(1)) == match.group(2)]
        return {"object": "search_result", "data": found, "has_more": False, "next_page": None,
                "url": "/v1/payment_intents/search", "total_count": len(found)}
    return await handle(request, work)


@routes.get("/v1/payment_intents/{id}")
async def get_payment_intent(request):
    return await handle(request, lambda store, *_: _get(store, request.match_info["id"], "payment_intent"))


@routes.get("/v1/charges/{id}")
async def get_charge(request):
    return await handle(request, lambda store, *_: _get(store, request.match_info["id"], "charge"))


@routes.get("/v1/disputes/{id}")
async def get_dispute(request):
    return await handle(request, lambda store, *_: _get(store, request.match_info["id"], "dispute"))


# --- refunds ----------------------------------------------------------------------------------------

@routes.post("/v1/refunds")
async def create_refund(request):
    def work(store, params, key, request):
        if params.get("payment_intent"):
            intent = _get(store, params["payment_intent"], "payment_intent")
            if not intent["latest_charge"] or intent["status"] != "succeeded":
                raise invalid("This PaymentIntent has no successful charge to refund.", param="payment_intent")
            charge = _get(store, intent["latest_charge"], "charge")
        else:
            charge = _get(store, params.get("charge") or "", "charge")
        left = charge["amount"] - charge["amount_refunded"]
        amount = _amount(params["amount"]) if "amount" in params else left
        if amount > left:
            raise invalid(f"Refund amount ({amount}) is greater than unrefunded amount on charge ({left})",
                          param="amount")
        refund = store.put(r.refund(charge, amount=amount, metadata=params.get("metadata", {})), idempotency_key=key)
        previous = {"amount_refunded": charge["amount_refunded"], "refunded": charge["refunded"]}
        charge["amount_refunded"] += amount
        charge["refunded"] = charge["amount_refunded"] == charge["amount"]
        charge["refunds"]["data"].append(refund)
        store.put(charge)
        emit(store, request, "charge.refunded", charge, previous_attributes=previous)
        return refund
    return await handle(request, work)


# --- checkout sessions (setup mode) -----------------------------------------------------------------

@routes.post("/v1/checkout/sessions")
async def create_checkout_session(request):
    def work(store, params, key, request):
        if params.get("mode") != "setup":
            raise invalid("The stand-in's Checkout Sessions are in setup mode only.", param="mode")
        _get(store, params.get("customer") or "", "customer")
        if not params.get("success_url"):
            raise invalid("Missing required param: success_url.", param="success_url")
        session_id = r.new_id("cs_test")
        return store.put(r.checkout_session(
            customer_id=params["customer"], success_url=params["success_url"], cancel_url=params.get("cancel_url"),
            metadata=params.get("metadata", {}), client_reference_id=params.get("client_reference_id"),
            session_id=session_id, url=f"{public_url(request)}/checkout/{session_id}",
            expires_at=r.now() + CHECKOUT_TTL_SECONDS), idempotency_key=key)
    return await handle(request, work)


@routes.get("/v1/checkout/sessions/{id}")
async def get_checkout_session(request):
    return await handle(request, lambda store, *_: _get(store, request.match_info["id"], "checkout.session"))
