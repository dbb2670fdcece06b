"""``/_sim/*``: what tests use to steer a running simulator and to see what it was asked to send.

Not part of Twilio's API, and unauthenticated: the simulator is a dev and test tool.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from .accounts import ACCOUNT_STATUSES
from .config import ConfigError, SimulatorConfig, parse_account_sid
from .state import (
    accounts_key,
    call_runner_key,
    call_store_key,
    config_key,
    faults_key,
    reporter_key,
    rng_key,
    store_key,
)
from .voice import InboundCall

STARTUP_ONLY = frozenset({"callback_concurrency"})

initial_config_key = web.AppKey("initial_config", SimulatorConfig)
routes = web.RouteTableDef()


@routes.get("/_sim/config")
async def get_config(request: web.Request) -> web.Response:
    return web.json_response(request.app[config_key].as_dict())


@routes.post("/_sim/config")
async def update_config(request: web.Request) -> web.Response:
    """Change some knobs, e.g. ``{"rate_429": 0.5}`` or ``{"auth_token": "rotated"}``."""
    try:
        changes = await request.json()
        if not isinstance(changes, dict):
            raise ConfigError("expected a JSON object of settings")
        if STARTUP_ONLY & changes.keys():
            raise ConfigError(f"fixed at start-up: {', '.join(sorted(STARTUP_ONLY & changes.keys()))}")
        _apply(request.app, changes)
    except (ValueError, ConfigError) as error:
        return web.json_response({"error": str(error)}, status=400)
    return web.json_response(request.app[config_key].as_dict())


@routes.get("/_sim/messages")
async def sent_messages(request: web.Request) -> web.Response:
    """Every accepted message, oldest first, with how many creates shared its To and Body."""
    store = request.app[store_key]
    messages = [
        {
            "sid": message.sid,
            "account_sid": message.account_sid,
            "to": message.to,
            "from": message.from_,
            "body": message.body,
            "num_segments": message.num_segments,
            "status": message.status,
            "error_code": message.error_code,
            "creates": store.creates_of(message),
            "created_at": message.date_created.isoformat(),  # to the microsecond, where Twilio's shows the second
        }
        for message in store
    ]
    return web.json_response(
        {
            "count": len(messages),
            "messages": messages,
            "duplicates": [m for m in messages if m["creates"] > 1],
        }
    )


@routes.get("/_sim/calls")
async def placed_calls(request: web.Request) -> web.Response:
    """Every call, oldest first: outbound ones with how many creates shared their To and From, forwarded legs
    (``parent_call_sid``), and the recordings (with transcriptions) callers left."""
    calls = list(request.app[call_store_key])
    creates: dict[tuple[str, str], int] = {}
    for call in calls:
        if call.direction == "outbound-api":
            creates[(call.to, call.from_)] = creates.get((call.to, call.from_), 0) + 1
    listed = [
        {
            "sid": call.sid, "account_sid": call.account_sid, "direction": call.direction, "to": call.to,
            "from": call.from_, "status": call.status, "duration": call.duration, "answered_by": call.answered_by,
            "time_limit": call.time_limit, "twiml": call.twiml, "parent_call_sid": call.parent_call_sid,
            "recordings": call.recordings, "creates": creates.get((call.to, call.from_), 0),
        }
        for call in calls
    ]
    return web.json_response({"count": len(listed), "calls": listed,
                              "duplicates": [c for c in listed if c["direction"] == "outbound-api"
                                             and c["creates"] > 1]})


@routes.post("/_sim/calls/inbound")
async def inbound_call(request: web.Request) -> web.Response:
    """Someone calls one of an account's numbers: ``{"from", "to", "url"}`` and optionally ``account_sid`` (the
    number's owner; the main account by default), ``status_callback``, ``forwarded_outcome`` (completed, busy,
    no-answer, failed), ``forwarded_seconds`` and ``voicemail_seconds``. Answers the call's sid at once; the
    voice URL is then asked for TwiML and its <Dial> and <Record> are played, with their callbacks."""
    try:
        fields = await request.json()
        if not isinstance(fields, dict) or not all(isinstance(fields.get(name), str) and fields[name]
                                                   for name in ("from", "to", "url")):
            raise ConfigError("expected a JSON object with from, to and url")
        account_sid = fields.get("account_sid") or request.app[accounts_key].main().sid
        if request.app[accounts_key].get(account_sid) is None:
            raise ConfigError(f"no account {account_sid}")
        outcome = fields.get("forwarded_outcome", "completed")
        if outcome not in ("completed", "busy", "no-answer", "failed"):
            raise ConfigError("forwarded_outcome is one of completed, busy, no-answer, failed")
        inbound = InboundCall(account_sid=account_sid, from_=fields["from"], to=fields["to"], url=fields["url"],
                              status_callback=fields.get("status_callback") or None, forwarded_outcome=outcome,
                              forwarded_seconds=int(fields.get("forwarded_seconds", 60)),
                              voicemail_seconds=int(fields.get("voicemail_seconds", 0)))
    except (ValueError, TypeError, ConfigError) as error:
        return web.json_response({"error": str(error)}, status=400)
    call = request.app[call_runner_key].receive(inbound)
    return web.json_response({"sid": call.sid}, status=201)


@routes.get("/_sim/accounts")
async def list_accounts(request: web.Request) -> web.Response:
    """The main account and every subaccount, with their auth tokens."""
    return web.json_response({"accounts": [account.as_resource() for account in request.app[accounts_key]]})


@routes.post("/_sim/accounts")
async def add_account(request: web.Request) -> web.Response:
    """Add a subaccount of the main account: ``{}`` or ``{"friendly_name", "sid", "auth_token", "status"}``.

    Answers the account with its auth token, which then authenticates API requests and signs the
    callbacks of the messages it sends.
    """
    try:
        fields = await request.json()
        if (not isinstance(fields, dict) or set(fields) - {"friendly_name", "sid", "auth_token", "status"}
                or not all(isinstance(value, str) and value for value in fields.values())):
            raise ConfigError("expected a JSON object of strings: friendly_name, sid, auth_token, status")
        if fields.get("status", "active") not in ACCOUNT_STATUSES:
            raise ConfigError(f"status is one of {', '.join(ACCOUNT_STATUSES)}")
        if "sid" in fields:
            parse_account_sid(fields["sid"])
        account = request.app[accounts_key].add(**fields)
    except (ValueError, ConfigError) as error:
        return web.json_response({"error": str(error)}, status=400)
    return web.json_response(account.as_resource(), status=201)


@routes.post("/_sim/accounts/{sid}/regenerate-token")
async def regenerate_token(request: web.Request) -> web.Response:
    """Regenerate a subaccount's auth token: requests with the old one get 401 / 20003. Answers the account."""
    account = request.app[accounts_key].regenerate_token(request.match_info["sid"])
    if account is None:
        return web.json_response({"error": "no such subaccount"}, status=404)
    return web.json_response(account.as_resource())


@routes.get("/_sim/faults")
async def injected_faults(request: web.Request) -> web.Response:
    """How many injected errors were served, by kind: lets a test wait until a fault really happened."""
    return web.json_response(dict(request.app[faults_key]))


@routes.post("/_sim/reset")
async def reset(request: web.Request) -> web.Response:
    """Forget all messages and calls, pending callbacks and subaccounts, and restore the start-up configuration."""
    request.app[store_key].clear()
    await request.app[call_runner_key].forget_all()
    request.app[call_store_key].clear()
    request.app[accounts_key].clear()
    request.app[faults_key].clear()
    request.app[reporter_key].forget_all()
    _apply(request.app, request.app[initial_config_key].as_dict())
    return web.json_response(request.app[config_key].as_dict())


def _apply(app: web.Application, changes: dict[str, Any]) -> None:
    config = app[config_key]
    config.apply(changes)
    if "seed" in changes:
        app[rng_key].seed(config.seed)
