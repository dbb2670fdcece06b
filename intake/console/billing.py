"""Billing, the owner's: buy a credit bucket with the card on file (the purchase flow of POST .../purchases), save or
update the card on Stripe's hosted page, auto-recharge's state, payments, and the plan shown read-only (the
operator changes it)."""

import asyncio
import secrets
from datetime import UTC, datetime

from aiohttp import web

from shared.billing.auto_recharge import get_settings
from shared.billing.gateways import gateway_from_settings
from shared.billing.payments import GatewayUnavailable
from shared.billing.price_list import current_price_list
from shared.billing.purchases import (
    PaymentDeclined,
    PaymentUnavailable,
    customer_of,
    find_payments,
    payment_method_on_file,
    purchase,
)
from shared.errors import DomainError
from shared.ledger.accounts import get_account
from shared.ledger.expiry import zone
from shared.money import InvalidAmount, parse_credits

from ..appkeys import DATABASE, PRINCIPAL, SETTINGS
from ..bodies import read_form
from ..errors import Problem
from ..policy import BILLING, action
from .render import page

routes = web.RouteTableDef()
PAYMENTS_SHOWN = 20


@routes.get("/accounts/{account_id}/billing")
@action(BILLING)
async def billing(request: web.Request) -> web.Response:
    return await _render(request, notice=None, error=None)


@routes.post("/accounts/{account_id}/billing/purchases")
@action(BILLING)
async def buy(request: web.Request) -> web.Response:
    """The form carries a key made when the page was drawn: sending it twice (a double click, a reload) buys once."""
    account_id, principal = request.match_info["account_id"], request[PRINCIPAL]
    form = await read_form(request)
    settings = request.app[SETTINGS]
    database = request.app[DATABASE]

    def card_on_file() -> str | None:
        with database.read_only() as session:
            return payment_method_on_file(session, account_id)

    try:
        credits = parse_credits(form.get("credits", ""))
        method = await asyncio.to_thread(card_on_file)
        if method is None:
            return await _render(request, notice=None, error="Save a card first (Update card), then buy.", status=422)
        payment = await asyncio.to_thread(
            purchase, database, gateway_from_settings(settings), account_id, credits, method,
            idempotency_key=f"console:{principal.name}:{account_id}:{form.get('purchase_key', '')}",
            now=datetime.now(UTC), return_url=f"{settings.public_base_url}/accounts/{account_id}/billing")
    except PaymentDeclined as declined:
        return await _render(request, notice=None, error=f"The card was declined: {declined}", status=402)
    except PaymentUnavailable as unavailable:
        return await _render(request, notice=None, error=f"{unavailable} Try again.", status=503)
    except (DomainError, InvalidAmount) as refused:
        return await _render(request, notice=None, error=str(refused), status=422)
    if payment.status == "requires_action" and payment.action_url:
        raise web.HTTPSeeOther(payment.action_url)  # 3-D Secure on the gateway's page, then back here
    notice = ("Paid: the credits are in." if payment.status == "succeeded" else
              f"The payment is {payment.status}: the credits land when it succeeds.")
    return await _render(request, notice=notice, error=None)


@routes.post("/accounts/{account_id}/billing/card")
@action(BILLING)
async def update_card(request: web.Request) -> web.Response:
    """To the gateway's hosted page, where the card is typed (it never passes through creditq), and back."""
    account_id = request.match_info["account_id"]
    settings, database = request.app[SETTINGS], request.app[DATABASE]
    gateway = gateway_from_settings(settings)
    back = f"{settings.public_base_url}/accounts/{account_id}/billing"

    def make():
        customer = customer_of(database, gateway, account_id, now=datetime.now(UTC))
        return gateway.setup_session(customer=customer, account_id=account_id, success_url=back, cancel_url=back)

    try:
        setup = await asyncio.to_thread(make)
    except GatewayUnavailable as unavailable:
        raise Problem(503, "Payment gateway unavailable", f"{unavailable} Try again.") from None
    raise web.HTTPSeeOther(setup.url)


def recharge_state(view) -> tuple[str, str]:
    """Auto-recharge as one word and a sentence: on, backing off (failures, the next try), or off and why."""
    if not view.enabled:
        return "off", view.disabled_reason or "Turned off."
    if view.consecutive_failures:
        when = view.next_attempt_at.isoformat(timespec="minutes") if view.next_attempt_at else "soon"
        return "backing off", f"{view.consecutive_failures} failed attempt(s); the next at {when}."
    return "on", "Buys a bucket when the balance falls under the threshold."


async def _render(request: web.Request, *, notice: str | None, error: str | None, status: int = 200) -> web.Response:
    account_id = request.match_info["account_id"]
    database, gateway = request.app[DATABASE], gateway_from_settings(request.app[SETTINGS])

    def read():
        with database.read_only() as session:
            account = get_account(session, account_id)
            recharge = get_settings(session, account_id)
            payments = find_payments(session, account_id, limit=PAYMENTS_SHOWN)
            method = payment_method_on_file(session, account_id)
        try:
            card = gateway.card(method) if method else None
        except GatewayUnavailable:
            card = None
        return account, recharge, payments, method, card

    account, recharge, payments, method, card = await asyncio.to_thread(read)
    prices = await asyncio.to_thread(current_price_list, database.engine)
    tier = prices.tier_for(account.plan_monthly_credits)
    return page(request, "billing.html", {
        "account": account, "recharge": recharge, "recharge_state": recharge_state(recharge), "payments": payments,
        "method": method, "card": card, "tier": tier, "currency": prices.currency.upper(),
        "purchase_key": secrets.token_urlsafe(16), "notice": notice, "error": error, "tz": zone(account.timezone)},
        status=status)
