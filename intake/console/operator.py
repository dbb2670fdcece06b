"""The operator's pages: accounts (search, negative, locked), month-end runs and their summaries (and a run, dry or
not: POST /v1/admin/month-end's job), dunning runs."""

import asyncio
from datetime import UTC, datetime

from aiohttp import web

from shared.billing import month_end
from shared.billing.calendar import Period
from shared.billing.dunning import list_runs
from shared.billing.gateways import gateway_from_settings
from shared.ledger.accounts import find_accounts

from ..appkeys import DATABASE, SETTINGS
from ..bodies import read_form
from ..policy import OPERATE, action
from .render import page

routes = web.RouteTableDef()
PAGE_SIZE = 50
DUNNING_STATUSES = ("open", "exhausted", "recovered")


@routes.get("/operator/accounts")
@action(OPERATE)
async def accounts(request: web.Request) -> web.Response:
    query = request.query
    wanted = {"name": query.get("q", "").strip() or None, "negative": True if query.get("negative") else None,
              "locked": True if query.get("locked") else None}

    def read(database):
        with database.read_only() as session:
            return find_accounts(session, limit=PAGE_SIZE, **wanted)

    rows = await asyncio.to_thread(read, request.app[DATABASE])
    return page(request, "operator_accounts.html", {"rows": rows, "q": wanted["name"] or "",
                                                    "negative": bool(wanted["negative"]),
                                                    "locked": bool(wanted["locked"])})


@routes.get("/operator/month-end")
@action(OPERATE)
async def month_end_page(request: web.Request) -> web.Response:
    return await _month_end(request, summary=None, error=None)


@routes.post("/operator/month-end")
@action(OPERATE)
async def run_month_end(request: web.Request) -> web.Response:
    """The scheduler's month-end, by hand; idempotent by nature (each account closes a period once)."""
    form = await read_form(request)
    try:
        period = Period.parse(form.get("period", ""))
    except ValueError as error:
        return await _month_end(request, summary=None, error=f"Period: {error}", status=422)
    dry_run = form.get("dry_run") == "on"
    gateway = None if dry_run else gateway_from_settings(request.app[SETTINGS])
    summary = await asyncio.to_thread(month_end.run, request.app[DATABASE], gateway, period, now=datetime.now(UTC),
                                      dry_run=dry_run)
    return await _month_end(request, summary=summary, error=None)


async def _month_end(request: web.Request, *, summary, error, status: int = 200) -> web.Response:
    def read(database):
        with database.read_only() as session:
            return month_end.recent_periods(session)

    periods = await asyncio.to_thread(read, request.app[DATABASE])
    return page(request, "operator_month_end.html", {"periods": periods, "summary": summary, "error": error},
                status=status)


@routes.get("/operator/dunning")
@action(OPERATE)
async def dunning_runs(request: web.Request) -> web.Response:
    status = request.query.get("status") if request.query.get("status") in DUNNING_STATUSES else None

    def read(database):
        with database.read_only() as session:
            return list_runs(session, None, limit=PAGE_SIZE, status=status)

    runs = await asyncio.to_thread(read, request.app[DATABASE])
    return page(request, "operator_dunning.html", {"runs": runs, "status": status, "statuses": DUNNING_STATUSES})
