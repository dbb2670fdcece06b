"""Transactions (every entry with its running subtotal, filters, CSV), messages sent and received, campaigns with
pause / resume / cancel. A role-`user` key sees its own only, as in the API (Principal.own_only)."""

import asyncio
import csv
import io
from datetime import UTC, date, timedelta

from aiohttp import web

from shared.campaigns.search import find_campaigns
from shared.campaigns.steering import campaign_view
from shared.ledger import allocations, book
from shared.ledger.accounts import get_account
from shared.ledger.expiry import local_midnight, zone
from shared.messaging.search import MessageFilter, find_messages
from shared.money import format_credits

from ..appkeys import DATABASE, PRINCIPAL
from ..bodies import read_form
from ..policy import READ_ACTIVITY, SEND, action
from ..routes.balance import ENTRY_KINDS
from ..routes.campaigns import steer_campaign
from .render import page
from .session import SECURITY_HEADERS

routes = web.RouteTableDef()
PAGE_SIZE = 50
CSV_BATCH = 1000  # entries read per query while the CSV streams
DIRECTIONS = ("outbound", "inbound")


class TransactionFilters:
    """?kind=&user_id=&from=YYYY-MM-DD&to=YYYY-MM-DD (local days, both included); unknown values are ignored."""

    def __init__(self, request: web.Request, tz_name: str):
        query, own_only = request.query, request[PRINCIPAL].own_only
        self.kind = query.get("kind") if query.get("kind") in ENTRY_KINDS else None
        self.user_id = own_only or query.get("user_id") or None
        self.day_from, self.day_to = _day(query.get("from")), _day(query.get("to"))
        tz = zone(tz_name)
        self.at_from = local_midnight(self.day_from, tz) if self.day_from else None
        self.at_before = local_midnight(self.day_to + timedelta(days=1), tz) if self.day_to else None
        self.before_id = int(query["before"]) if query.get("before", "").isdigit() else None

    def read(self, session, account_id: str, *, limit: int, before_id: int | None):
        return book.transactions(session, account_id, limit=limit, before_id=before_id, user_id=self.user_id,
                                 kind=self.kind, at_from=self.at_from, at_before=self.at_before)

    def query(self) -> dict[str, str]:
        """The filters as query parameters, for the next page's and the CSV's links."""
        wanted = {"kind": self.kind, "user_id": self.user_id, "from": self.day_from and self.day_from.isoformat(),
                  "to": self.day_to and self.day_to.isoformat()}
        return {name: value for name, value in wanted.items() if value}


def _day(raw: str | None) -> date | None:
    try:
        return date.fromisoformat(raw) if raw else None
    except ValueError:
        return None


@routes.get("/accounts/{account_id}/transactions")
@action(READ_ACTIVITY)
async def transactions(request: web.Request) -> web.Response:
    account_id, principal = request.match_info["account_id"], request[PRINCIPAL]

    def read(database):
        with database.read_only() as session:
            account = get_account(session, account_id)
            filters = TransactionFilters(request, account.timezone)
            rows = filters.read(session, account_id, limit=PAGE_SIZE + 1, before_id=filters.before_id)
            users = [] if principal.own_only else allocations.list_users(session, account_id)
        return account, filters, rows, users

    account, filters, rows, users = await asyncio.to_thread(read, request.app[DATABASE])
    next_query = None
    if len(rows) > PAGE_SIZE:
        rows = rows[:PAGE_SIZE]
        next_query = {**filters.query(), "before": str(rows[-1].id)}
    return page(request, "transactions.html", {"account": account, "rows": rows, "filters": filters,
                                               "kinds": ENTRY_KINDS, "users": users, "next_query": next_query,
                                               "tz": zone(account.timezone)})


@routes.get("/accounts/{account_id}/transactions.csv")
@action(READ_ACTIVITY)
async def transactions_csv(request: web.Request) -> web.StreamResponse:
    """Every matching entry, newest first, streamed a batch at a time."""
    account_id = request.match_info["account_id"]
    database = request.app[DATABASE]

    def read(before_id):
        with database.read_only() as session:
            account = get_account(session, account_id)
            filters = TransactionFilters(request, account.timezone)
            return filters.read(session, account_id, limit=CSV_BATCH, before_id=before_id)

    response = web.StreamResponse(headers={
        **SECURITY_HEADERS, "Content-Type": "text/csv; charset=utf-8",
        "Content-Disposition": f'attachment; filename="transactions-{account_id}.csv"'})
    await response.prepare(request)
    await response.write(_csv_lines([("id", "at", "kind", "credits", "balance_after", "user_id", "reference",
                                      "memo")]))
    before_id = None
    while rows := await asyncio.to_thread(read, before_id):
        await response.write(_csv_lines([(row.id, row.at.astimezone(UTC).isoformat(), row.kind,
                                          format_credits(row.amount), format_credits(row.balance_after),
                                          row.user_id or "", row.reference or "", row.memo or "") for row in rows]))
        before_id = rows[-1].id
        if len(rows) < CSV_BATCH:
            break
    await response.write_eof()
    return response


def _csv_lines(rows) -> bytes:
    out = io.StringIO()
    csv.writer(out).writerows(rows)
    return out.getvalue().encode()


@routes.get("/accounts/{account_id}/messages")
@action(READ_ACTIVITY)
async def messages(request: web.Request) -> web.Response:
    account_id, principal = request.match_info["account_id"], request[PRINCIPAL]
    direction = request.query.get("direction") if request.query.get("direction") in DIRECTIONS else None
    before_id = request.query.get("before") or None

    def read(database):
        with database.read_only() as session:
            account = get_account(session, account_id)
            rows = find_messages(session, account_id, MessageFilter(direction=direction, user_id=principal.own_only),
                                 limit=PAGE_SIZE + 1, before_id=before_id)
        return account, rows

    account, rows = await asyncio.to_thread(read, request.app[DATABASE])
    next_before = rows[PAGE_SIZE - 1].id if len(rows) > PAGE_SIZE else None
    return page(request, "messages.html", {"account": account, "rows": rows[:PAGE_SIZE], "direction": direction,
                                           "directions": DIRECTIONS, "next_before": next_before,
                                           "tz": zone(account.timezone)})


@routes.get("/accounts/{account_id}/campaigns")
@action(READ_ACTIVITY)
async def campaigns(request: web.Request) -> web.Response:
    return await _campaigns_page(request, notice=None)


@routes.post("/accounts/{account_id}/campaigns/{campaign_id}/{steer:cancel|pause|resume}")
@action(SEND)
async def steer(request: web.Request) -> web.Response:
    await read_form(request)
    view = await steer_campaign(request.app, request[PRINCIPAL], request.match_info["campaign_id"],
                                request.match_info["steer"])
    return await _campaigns_page(request, notice=f"{view['name']} is {view['status']}.")


async def _campaigns_page(request: web.Request, *, notice: str | None) -> web.Response:
    account_id, principal = request.match_info["account_id"], request[PRINCIPAL]

    def read(database):
        with database.read_only() as session:
            account = get_account(session, account_id)
            views = [campaign_view(session, campaign) for campaign in
                     find_campaigns(session, account_id, limit=PAGE_SIZE, user_id=principal.own_only)]
        return account, views

    account, views = await asyncio.to_thread(read, request.app[DATABASE])
    return page(request, "campaigns.html", {"account": account, "campaigns": views, "notice": notice})

