"""An account's run-out forecast (or one user's) and its plan advice."""

import asyncio

from aiohttp import web

from shared.billing import advice, forecasts
from shared.db import Database
from shared.errors import NotFound
from shared.money import format_credits
from shared.reporting.daily_usage import KINDS

from ..appkeys import CLOCK, DATABASE
from ..auth import require_access
from ..bodies import json_response
from ..fields import QueryFilters
from ..openapi import problem, query_filter
from ..policy import READ_ACCOUNT, action
from .accounts import _ACCOUNT_PATH, _CREDITS, _INSTANT, _json

routes = web.RouteTableDef()


@routes.get("/v1/accounts/{account_id}/forecast")
@action(READ_ACCOUNT)
async def get_forecast(request: web.Request) -> web.Response:
    account_id = request.match_info["account_id"]
    own_only = require_access(request, account_id).own_only
    filters = QueryFilters(request.query, page_names=())
    user_id = filters.text("user_id", max_length=40)
    filters.done()
    if own_only is not None and user_id not in (None, own_only):  # a user reads its own forecast only
        raise NotFound(f"No user {user_id} in account {account_id}.")
    now = request.app[CLOCK]()

    def read(database: Database) -> dict:
        with database.read_only() as session:
            return forecast_json(forecasts.forecast(session, account_id, now=now, user_id=user_id or own_only))

    return json_response(await asyncio.to_thread(read, request.app[DATABASE]))


@routes.get("/v1/accounts/{account_id}/advice")
@action(READ_ACCOUNT)
async def get_advice(request: web.Request) -> web.Response:
    account_id = request.match_info["account_id"]
    require_access(request, account_id)
    QueryFilters(request.query, page_names=()).done()
    now = request.app[CLOCK]()

    def read(database: Database) -> dict:
        with database.read_only() as session:
            return advice.advice_for(session, account_id, now=now).as_dict()

    return json_response(await asyncio.to_thread(read, request.app[DATABASE]))


def forecast_json(forecast: forecasts.Forecast) -> dict:
    return {
        "runs_out_at": forecast.runs_out_at and forecast.runs_out_at.isoformat(),
        "daily_rate": format_credits(forecast.daily_rate),
        "scheduled_credits": format_credits(forecast.scheduled_credits),
        "expiring": [{"at": e.at.isoformat(), "credits": format_credits(e.credits)} for e in forecast.expiring],
        "confidence": forecast.confidence,
        "history_days": forecast.history_days,
        "low_balance_at": forecast.low_balance_at and forecast.low_balance_at.isoformat(),
        "auto_recharges_expected": forecast.auto_recharges_expected,
        "recent_usage": {kind: {f"last_{days}_days": format_credits(spent) for days, spent in by_days.items()}
                         for kind, by_days in forecast.recent.items()},
    }


_NULLABLE_INSTANT = {"type": ["string", "null"], "format": "date-time"}
CONFIDENCE = (
    "How far to trust `runs_out_at`, from how many days of history there are and how far the days stray from the "
    "fitted model (their root-mean-square distance from it, against the mean day): `high`, at least 28 days of "
    "history within a quarter of the mean; `medium`, at least 7 days within half of it; `low`, anything else; "
    "`none`, no spending in the last 90 days (nothing is projected: only scheduled sends and expiries move it).")
FORECAST_SCHEMA = {"type": "object", "properties": {
    "runs_out_at": {**_NULLABLE_INSTANT, "description": (
        "When the available credits reach zero, in the account's time zone, assuming no auto-recharge and no "
        "purchase (the plan's grants at its cycle ends are counted); null: not within a year.")},
    "daily_rate": {**_CREDITS, "description": (
        "Projected spending per day over the next week: a least-squares trend over the last 30 days' daily usage "
        "(its weekday pattern taken out, from the last 28 days, and put back).")},
    "scheduled_credits": {**_CREDITS, "description": (
        "Scheduled messages and campaign and drip steps not sent yet (nothing is held for them yet).")},
    "expiring": {"type": "array", "description": "Credits projected to lapse unspent, soonest first.",
                 "items": {"type": "object", "properties": {"at": _INSTANT, "credits": _CREDITS}}},
    "confidence": {"type": "string", "enum": ["high", "medium", "low", "none"], "description": CONFIDENCE},
    "history_days": {"type": "integer", "description": "Days of usage history the projection used (at most 90)."},
    "low_balance_at": {**_NULLABLE_INSTANT, "description": (
        "When the available credits first fall under the low-balance threshold (the notice goes then).")},
    "auto_recharges_expected": {"type": "integer", "description": (
        "How many auto-recharges would fire in the next 30 days at this rate (0 when auto-recharge is off).")},
    "recent_usage": {"type": "object", "description": "Credits spent in the last 7, 30 and 90 days, by kind.",
                     "properties": {kind: {"type": "object", "properties": {
                         f"last_{days}_days": _CREDITS for days in (7, 30, 90)}} for kind in KINDS}},
}}
_OPTION = {"type": "object", "properties": {
    "kind": {"type": "string", "enum": ["plan", "credit_hold", "rollover_protection"]},
    "monthly_credits": _CREDITS,
    "cost_cents": {"type": ["integer", "null"], "description": (
        "What it would have cost over the cycles, in the price list's currency; null when the price list does not "
        "sell the account's current plan.")}}}
ADVICE_SCHEMA = {"type": "object", "properties": {
    "account_id": {"type": "string"}, "currency": {"type": "string"},
    "cycles": {"type": "array", "description": "The last three ended local months, oldest first.",
               "items": {"type": "object", "properties": {
                   "period": {"type": "string", "examples": ["2026-10"]}, "used": _CREDITS,
                   "expired": {**_CREDITS, "description": "Credits that lapsed unspent when the month ended."},
                   "unused": {**_CREDITS, "description": "Of the month's plan credits, what was not spent."}}}},
    "rollover_trend": {"type": "string", "enum": ["rising", "falling", "flat"], "description": (
        "How the unused plan credits moved over the cycles (by more than a tenth of the plan, or flat).")},
    "current": _OPTION, "recommended": _OPTION,
    "saving_cents": {"type": "integer", "description": (
        "What the recommended option would have saved over the cycles, from the price list; 0: keep the current.")},
}}

OPENAPI_PATHS = {
    "/v1/accounts/{account_id}/forecast": {"parameters": [_ACCOUNT_PATH], "get": {
        "operationId": "getForecast",
        "summary": "When the account's (or a user's) credits run out, what expires on the way",
        "description": ("Projected from the daily usage of the last 90 days and what is scheduled. With `user_id`, "
                        "that user's own spending against the wallet it spends from (a role-`user` key: its own)."),
        "parameters": [query_filter("user_id", "The user whose forecast to read.")],
        "responses": {"200": {"description": "the forecast", **_json(FORECAST_SCHEMA)},
                      "404": problem(404, "no such account (or another account's), or no such user in it"),
                      "422": problem(422)},
    }},
    "/v1/accounts/{account_id}/advice": {"parameters": [_ACCOUNT_PATH], "get": {
        "operationId": "getAdvice",
        "summary": "The plan that would have cost least for the last three months' usage, with the saving",
        "description": ("Each of the price list's plans, the credit hold plan and rollover protection played over "
                        "what the account spent in its last three ended local months."),
        "responses": {"200": {"description": "the advice", **_json(ADVICE_SCHEMA)},
                      "404": problem(404, "no such account (or another account's)"),
                      "422": problem(422)},
    }},
}
