"""Operator jobs over HTTP: `POST /v1/admin/month-end` runs the scheduler's month-end for a period."""

import asyncio
from datetime import UTC, datetime

from aiohttp import web

from shared.billing import month_end
from shared.billing.calendar import Period
from shared.billing.gateways import gateway_from_settings
from shared.money import format_credits

from ..appkeys import DATABASE, SETTINGS
from ..bodies import json_response, read_json
from ..errors import Problem
from ..openapi import problem
from ..policy import OPERATE, action

routes = web.RouteTableDef()


@routes.post("/v1/admin/month-end")
@action(OPERATE)
async def run_month_end(request: web.Request) -> web.Response:
    """Idempotent by nature (each account closes a period once), so it needs no Idempotency-Key."""
    body = await read_json(request)
    try:
        period = Period.parse(body.get("period"))
    except ValueError as error:
        raise Problem(422, "Validation failed", str(error),
                      errors={"period": "must be a month YYYY-MM from 1970-01 to 8999-12, such as 2026-11"})
    dry_run = body.get("dry_run", False)
    if not isinstance(dry_run, bool):
        raise Problem(422, "Validation failed", "dry_run must be true or false", errors={"dry_run": "must be a boolean"})
    gateway = None if dry_run else gateway_from_settings(request.app[SETTINGS])
    summary = await asyncio.to_thread(month_end.run, request.app[DATABASE], gateway, period,
                                      now=datetime.now(UTC), dry_run=dry_run)
    return json_response(summary_body(summary))


def summary_body(summary: month_end.Summary) -> dict:
    return {
        "period": summary.period, "dry_run": summary.dry_run, "accounts": summary.accounts,
        "closed": summary.closed, "already_closed": summary.already_closed, "not_ended": summary.not_ended,
        "not_opened": summary.not_opened, "failed": summary.failed,
        "credits": {name: format_credits(getattr(summary, name))
                    for name in ("expired", "billed", "number_fees", "granted", "allocated")},
        "payments": {"succeeded": summary.payments_succeeded, "declined": summary.payments_declined,
                     "pending": summary.payments_pending},
        "advice": {"advised": summary.advised, "saving_cents": summary.advice_saving_cents,
                   "running_out": summary.running_out},
    }


_CREDITS = {"type": "string", "description": "credits as a decimal string"}
# What a request looks like: the document's examples (clients copy them, the contract tests send them).
_PERIOD_EXAMPLE = {"period": "2026-01", "dry_run": True}

OPENAPI_PATHS = {
    "/v1/admin/month-end": {"post": {
        "operationId": "runMonthEnd",
        "summary": "Run month-end for a period (operator): the scheduler's job, by hand",
        "description": "Closes the period for every account whose local month has ended: expires lots, bills and "
                       "resets negative overdraft/postpaid balances, charges phone numbers' monthly credits, grants "
                       "the next cycle's plan credits and gives users their monthly credits, then advises each "
                       "account on its plan. Running it again changes nothing; a dry run writes and charges nothing.",
        "requestBody": {"required": True, "content": {"application/json": {"schema": {
            "type": "object", "examples": [_PERIOD_EXAMPLE], "required": ["period"],
            "properties": {"period": {"type": "string", "pattern": "^\\d{4}-\\d{2}$", "examples": ["2026-11"]},
                           "dry_run": {"type": "boolean", "default": False}}}}}},
        "responses": {
            "200": {"description": "what was done (or would be, in a dry run)", "content": {"application/json": {
                "schema": {"type": "object", "properties": {
                    "period": {"type": "string"}, "dry_run": {"type": "boolean"},
                    "accounts": {"type": "integer"}, "closed": {"type": "integer",
                                                                "description": "periods closed (catch-up included)"},
                    "already_closed": {"type": "integer"}, "not_ended": {"type": "integer"},
                    "not_opened": {"type": "integer", "description": "accounts created after the period: "
                                                                      "nothing before an account's creation is closed"},
                    "failed": {"type": "array", "items": {"type": "string"}},
                    "credits": {"type": "object", "properties": {k: _CREDITS for k in (
                        "expired", "billed", "number_fees", "granted", "allocated")}},
                    "payments": {"type": "object", "properties": {k: {"type": "integer"} for k in (
                        "succeeded", "declined", "pending")}},
                    "advice": {"type": "object", "description": (
                        "Plan advice over each closed account's last three months (GET .../advice): how many were "
                        "advised a cheaper option, what those would have saved (cents, the price list's currency), "
                        "and how many are forecast to run out of credits before their next month-end"),
                        "properties": {k: {"type": "integer"}
                                       for k in ("advised", "saving_cents", "running_out")}}}}}}},
            "403": problem(403, "not the operator key"), "422": problem(422, "bad period or dry_run")}}},
}
