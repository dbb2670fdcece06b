"""Compose: a text to one recipient or a group, now or later, with the live estimate ticker; and what a voice
broadcast would cost.

The ticker is POST /v1/estimate's own code (intake.routes.estimate.estimate_for), asked by htmx as the body
changes; sending goes through the same accept batches as POST /v1/messages, one message per recipient, charged to
the signed-in user as a user key's sends are (intake.policy.acting_user).
"""

import asyncio
import functools
import re
from datetime import datetime

from aiohttp import web

from shared.errors import DomainError, ValidationFailed
from shared.ledger.accounts import get_account
from shared.ledger.expiry import zone
from shared.messaging import senders
from shared.messaging.messages import MessageRequest
from shared.messaging.rates import current_rate_card
from shared.voice.broadcasts import estimate_broadcast

from ..appkeys import DATABASE, PRINCIPAL, SETTINGS
from ..bodies import read_form
from ..policy import SEND, acting_user, action
from ..routes.estimate import estimate_for
from ..routes.messages import ACCEPT_BATCHER
from .render import page

routes = web.RouteTableDef()
MAX_GROUP = 100  # recipients one console send takes; a larger list is a campaign


def recipients_of(raw: str) -> list[str]:
    """Numbers separated by commas, semicolons, spaces or lines, each once, in order."""
    seen: dict[str, None] = {}
    for number in re.split(r"[\s,;]+", raw.strip()):
        if number:
            seen.setdefault(number, None)
    return list(seen)


@routes.get("/accounts/{account_id}/compose")
@action(SEND)
async def compose(request: web.Request) -> web.Response:
    account_id = request.match_info["account_id"]

    def read(database):
        with database.read_only() as session:
            return get_account(session, account_id), senders.list_numbers(session, account_id)

    account, numbers = await asyncio.to_thread(read, request.app[DATABASE])
    return page(request, "compose.html", {"account": account, "numbers": numbers, "sent": [], "errors": [],
                                          "form": {}, "estimate": None, "estimate_error": None})


@routes.post("/accounts/{account_id}/compose/estimate")
@action(SEND)
async def estimate_ticker(request: web.Request) -> web.Response:
    """The ticker's fragment: characters, segments, encoding, credits and why UCS-2."""
    form = await read_form(request)
    estimate, error = await _estimate(request, form)
    return page(request, "ticker.html", {"estimate": estimate, "estimate_error": error})


@routes.post("/accounts/{account_id}/compose/voice-estimate")
@action(SEND)
async def voice_estimate(request: web.Request) -> web.Response:
    """A voice broadcast's estimate, as POST /v1/estimate answers channel voice_broadcast: numbers x expected
    minutes x the broadcast rate, plus the detection charge per number."""
    form = await read_form(request)
    estimate, error = None, None
    rate_card = await asyncio.to_thread(current_rate_card, request.app[DATABASE].engine)
    try:
        estimate = estimate_broadcast(_whole(form.get("recipients")), _whole(form.get("expected_minutes")),
                                      form.get("machine_detection") == "true", rate_card=rate_card)
    except ValidationFailed as invalid:
        error = "; ".join(f"{name.replace('_', ' ')} {reason}" for name, reason in invalid.errors.items())
    return page(request, "voice_ticker.html", {"voice": estimate and estimate.as_dict(), "voice_error": error})


def _whole(raw: str | None) -> int | str | None:
    """A form's number as the API's JSON would carry it: digits make an int; anything else stays to be refused."""
    raw = (raw or "").strip()
    return int(raw) if raw.isascii() and raw.isdigit() else raw or None


@routes.post("/accounts/{account_id}/compose")
@action(SEND)
async def send(request: web.Request) -> web.Response:
    account_id, principal = request.match_info["account_id"], request[PRINCIPAL]
    form = await read_form(request)
    numbers = recipients_of(form.get("to", ""))
    errors = []
    if not numbers:
        errors.append("Add at least one recipient.")
    if len(numbers) > MAX_GROUP:
        errors.append(f"A console send takes at most {MAX_GROUP} recipients; send more as a campaign.")

    def read(database):
        with database.read_only() as session:
            return get_account(session, account_id), senders.list_numbers(session, account_id)

    account, sender_numbers = await asyncio.to_thread(read, request.app[DATABASE])
    send_at = None
    if form.get("send_at"):
        try:
            send_at = datetime.fromisoformat(form["send_at"]).replace(tzinfo=zone(account.timezone)).isoformat()
        except ValueError:
            errors.append("The send time is not a date and time.")
    sent = []
    if not errors:
        user_id = acting_user(principal, None)
        requests = [MessageRequest(to=number, from_=form.get("from") or None, body=form.get("body", ""),
                                   user_id=user_id, send_at=send_at) for number in numbers]
        outcomes = await asyncio.gather(*(request.app[ACCEPT_BATCHER].accept(account_id, one) for one in requests),
                                        return_exceptions=True)
        for number, outcome in zip(numbers, outcomes):
            if isinstance(outcome, DomainError):
                errors.append(f"{number}: {outcome}")
            elif isinstance(outcome, BaseException):
                raise outcome
            else:
                sent.append((number, outcome))
    estimate, estimate_error = await _estimate(request, form)
    return page(request, "compose.html", {"account": account, "numbers": sender_numbers, "sent": sent,
                                          "errors": errors, "form": form, "estimate": estimate,
                                          "estimate_error": estimate_error},
                status=422 if errors and not sent else 200)


async def _estimate(request: web.Request, form) -> tuple[object, str | None]:
    """The estimate for what the form holds; a recipient that is not a number yet is counted in the home country,
    and named in the error shown beside the figures."""
    numbers = recipients_of(form.get("to", ""))
    payload = {"body": form.get("body", ""), "to": numbers or None}
    price = functools.partial(estimate_for, request.app[DATABASE], request.match_info["account_id"],
                              sender=form.get("from") or None, smart_encoding=False,
                              shared_short_code=request.app[SETTINGS].shared_short_code)
    try:
        return await asyncio.to_thread(price, payload), None
    except ValidationFailed as invalid:
        if not payload["body"]:
            return None, None  # nothing typed yet
        if not numbers or any(not field.startswith("to") for field in invalid.errors):
            return None, str(invalid)
        try:
            return await asyncio.to_thread(price, {"body": payload["body"], "recipients": len(numbers)}), str(invalid)
        except ValidationFailed:
            return None, str(invalid)
