"""The dashboard (balance by kind, held, what expires this month, banners) and the expiring report."""

import asyncio
from datetime import timedelta

from aiohttp import web

from shared.ledger.expiry import local_date, zone
from shared.money import format_credits
from shared.reporting.daily_usage import usage_by_day, usage_by_user

from ..appkeys import CLOCK, DATABASE, PRINCIPAL
from ..policy import READ_ACCOUNT, action
from .charts import PERIODS, usage_chart
from .render import page
from .wallets import LOT_KINDS, wallet_for

routes = web.RouteTableDef()


@routes.get("/accounts/{account_id}")
@action(READ_ACCOUNT)
async def dashboard(request: web.Request) -> web.Response:
    """?days=30 (the default) or 90: the usage chart's span."""
    account_id, principal, now = request.match_info["account_id"], request[PRINCIPAL], request.app[CLOCK]()
    days = int(request.query["days"]) if request.query.get("days") in {str(p) for p in PERIODS} else PERIODS[0]

    def read(database):
        with database.read_only() as session:
            account, wallet, view = wallet_for(session, principal, account_id, now=now)
            until = local_date(now, zone(account.timezone))
            since = until - timedelta(days=days - 1)
            usage = usage_by_day(session, account_id, since=since, until=until, user_id=principal.own_only)
            per_user = {} if principal.own_only else usage_by_user(session, account_id, since=since, until=until)
        return account, wallet, view, usage, per_user, until

    account, wallet, view, usage, per_user, until = await asyncio.to_thread(read, request.app[DATABASE])
    names = {user.id: user.name for user in view.users}
    spenders = sorted(((names.get(user_id, user_id) if user_id else "Company pool (owners and admins)", spent)
                       for user_id, spent in per_user.items() if spent), key=lambda pair: -pair[1])
    return page(request, "dashboard.html", {"account": account, "wallet": wallet, "kinds": LOT_KINDS,
                                            "banners": banners(account, wallet, principal),
                                            "chart": usage_chart(usage, until=until, days=days),
                                            "periods": PERIODS, "spenders": spenders})


@routes.get("/accounts/{account_id}/expiring")
@action(READ_ACCOUNT)
async def expiring_report(request: web.Request) -> web.Response:
    account_id, principal, now = request.match_info["account_id"], request[PRINCIPAL], request.app[CLOCK]()

    def read(database):
        with database.read_only() as session:
            return wallet_for(session, principal, account_id, now=now)

    account, wallet, _ = await asyncio.to_thread(read, request.app[DATABASE])
    return page(request, "expiring.html", {"account": account, "wallet": wallet})


def banners(account, wallet, principal) -> list[tuple[str, str]]:
    """(level, text) for the account's state, each saying what to do next, in the signed-in role's terms."""
    buyer = principal.is_operator or principal.role == "owner"
    found = []
    if account.status != "active":
        next_step = ("Buy credits on the Billing page to unlock it." if buyer and account.status == "locked" else
                     "Ask the account's owner to buy credits." if account.status == "locked" else
                     "Contact support to reactivate it.")
        found.append(("danger", f"The account is {account.status}: {account.status_reason or 'no reason given'}. "
                                f"{next_step}"))
    elif principal.own_only is None and account.low_balance_threshold and wallet.balance < account.low_balance_threshold:
        next_step = ("Buy credits or turn on auto-recharge on the Billing page." if buyer else
                     "Ask the account's owner to buy credits.")
        found.append(("warning", f"Credits are running low: {format_credits(wallet.balance)} left, under the "
                                 f"{format_credits(account.low_balance_threshold)} threshold. {next_step}"))
    if wallet.expiring_end_of_month:
        found.append(("info", f"{format_credits(wallet.expiring_end_of_month)} credits expire at the end of this "
                              "month: use them first."))
    return found
