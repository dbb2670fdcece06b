"""The pages a customer meets at Stripe: Checkout in setup mode, and the 3-D Secure challenge.

Submitting the Checkout form saves the chosen test card to the Customer through a SetupIntent and completes
the Session; the challenge page completes (or fails) a PaymentIntent that `requires_action`. Each sends the
events Stripe would.
"""

from __future__ import annotations

import html

from aiohttp import web

from . import resources as r
from .api import StripeError, confirm_setup, emit, succeed
from .state import store_key

routes = web.RouteTableDef()

_PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>{title}</title></head>
<body><h1>{title}</h1>{body}</body></html>"""


def _page(title: str, body: str, status: int = 200) -> web.Response:
    return web.Response(text=_PAGE.format(title=html.escape(title), body=body), content_type="text/html",
                        status=status)


@routes.get("/checkout/{id}")
async def checkout_page(request: web.Request) -> web.Response:
    session = request.app[store_key].get(request.match_info["id"], "checkout.session")
    if session is None:
        return _page("No such Checkout Session", "", 404)
    if session["status"] != "open" or session["expires_at"] < r.now():
        return _page("This Checkout Session is no longer open", f"<p>Status: {html.escape(session['status'])}</p>",
                     410)
    options = "".join(f'<option value="{token}">{token} ({card.brand} •••• {card.last4})</option>'
                      for token, card in r.TEST_CARDS.items())
    return _page("Save a card", f'<form method="post"><select name="payment_method">{options}</select>'
                                '<button type="submit">Save card</button></form>')


@routes.post("/checkout/{id}")
async def complete_checkout(request: web.Request) -> web.Response:
    store = request.app[store_key]
    token = (await request.post()).get("payment_method", "pm_card_visa")
    if token not in r.TEST_CARDS:
        return _page("Unknown test card", "", 422)
    with store.transaction():
        session = store.get(request.match_info["id"], "checkout.session")
        if session is None:
            return _page("No such Checkout Session", "", 404)
        if session["status"] != "open" or session["expires_at"] < r.now():
            return _page("This Checkout Session is no longer open", "", 410)
        card = r.TEST_CARDS[token]
        method = store.put(r.payment_method(card, customer_id=None), card=token)
        intent = r.setup_intent(customer_id=session["customer"], payment_method_id=method["id"], usage="off_session",
                                metadata=session["metadata"])
        try:
            confirm_setup(store, request, intent, method, card)
        except StripeError as error:
            return _page("Your card was declined", f"<p>{html.escape(error.body['error']['message'])}</p>", 402)
        session.update(status="complete", setup_intent=intent["id"])
        store.put(session)
        emit(store, request, "checkout.session.completed", session)
    raise web.HTTPSeeOther(session["success_url"])


@routes.get("/authenticate/{id}")
async def challenge_page(request: web.Request) -> web.Response:
    intent = request.app[store_key].get(request.match_info["id"], "payment_intent")
    if intent is None or intent["status"] != "requires_action":
        return _page("Nothing to authenticate", "", 404)
    return _page("3-D Secure", '<form method="post"><button name="action" value="complete">Complete</button>'
                               '<button name="action" value="fail">Fail</button></form>')


@routes.post("/authenticate/{id}")
async def complete_challenge(request: web.Request) -> web.Response:
    store = request.app[store_key]
    action = (await request.post()).get("action", "complete")
    with store.transaction():
        intent = store.get(request.match_info["id"], "payment_intent")
        if intent is None or intent["status"] != "requires_action":
            return _page("Nothing to authenticate", "", 404)
        return_url = intent["next_action"]["redirect_to_url"].get("return_url")
        if action == "complete":
            succeed(store, request, intent, r.TEST_CARDS[store.card_of(intent["payment_method"])])
        else:
            intent.update(status="requires_payment_method", next_action=None, last_payment_error={
                "type": "card_error", "code": "payment_intent_authentication_failure", "message":
                "The provided PaymentMethod has failed authentication."})
            store.put(intent)
            emit(store, request, "payment_intent.payment_failed", intent)
    if return_url:
        raise web.HTTPSeeOther(return_url)
    return _page("Done", f"<p>{html.escape(intent['status'])}</p>")
