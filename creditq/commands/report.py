"""`creditq report expiring [--json]`: per account, the credits that expire when its month ends;
`creditq report advice [--json]`: the accounts a cheaper plan is advised to, with the saving."""

import argparse
import json
from datetime import UTC, datetime

from rich.console import Console
from rich.table import Table

from shared.billing.advice import advised_accounts
from shared.billing.reports import all_expiring
from shared.config import load_settings
from shared.db import Database
from shared.money import format_credits


def register(subparsers) -> None:
    parser = subparsers.add_parser("report", help="reports over all accounts")
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    expiring_parser = actions.add_parser("expiring", help="credits that expire at the end of this month")
    expiring_parser.add_argument("--json", action="store_true", help="one JSON array of accounts ([] when none)")
    expiring_parser.set_defaults(run=run_expiring)
    advice_parser = actions.add_parser("advice", help="accounts a cheaper plan (or credit hold, or rollover "
                                                      "protection) would have served over their last three months")
    advice_parser.add_argument("--json", action="store_true", help="one JSON array of advice ([] when none)")
    advice_parser.set_defaults(run=run_advice)


def run_advice(args: argparse.Namespace) -> int:
    database = Database(load_settings().database_url)
    try:
        advised = list(advised_accounts(database, now=datetime.now(UTC)))
        if args.json:
            print(json.dumps([advice.as_dict() for advice in advised]))
            return 0
        table = Table(title="plan advice over the last three months")
        table.add_column("account", no_wrap=True, min_width=max((len(a.account_id) for a in advised), default=None))
        for column in ("now", "advised", "expired (3 months)", "rollover trend"):
            table.add_column(column)
        table.add_column("saving", justify="right")
        for advice in advised:
            table.add_row(advice.account_id, _option(advice.current), _option(advice.recommended),
                          format_credits(sum(cycle.expired for cycle in advice.cycles)), advice.rollover_trend,
                          f"{advice.saving_cents // 100}.{advice.saving_cents % 100:02d} {advice.currency.upper()}")
        Console().print(table)
        return 0
    finally:
        database.dispose()


def _option(option) -> str:
    if option.kind == "credit_hold":
        return "credit hold"
    plan = f"{format_credits(option.monthly_credits)} credits a month"
    return plan + " with rollover protection" if option.kind == "rollover_protection" else plan


def run_expiring(args: argparse.Namespace) -> int:
    database = Database(load_settings().database_url)
    try:
        rows = list(all_expiring(database.unit_of_work, datetime.now(UTC)))
        if args.json:
            print(json.dumps([{"account_id": row.account_id, "name": row.name, "timezone": row.timezone,
                               "month_ends_at": row.month_ends_at.isoformat(),
                               "expiring_end_of_month": format_credits(row.credits)} for row in rows]))
            return 0
        table = Table(title="credits expiring at the end of this month")
        # an id is copied from here: its column is never cut, however narrow the terminal
        table.add_column("account", no_wrap=True, min_width=max((len(row.account_id) for row in rows), default=None))
        for column in ("name", "time zone", "month ends at"):
            table.add_column(column)
        table.add_column("credits", justify="right")
        total = 0
        for row in rows:
            total += row.credits
            table.add_row(row.account_id, row.name, row.timezone, row.month_ends_at.isoformat(),
                          format_credits(row.credits))
        table.add_row("total", "", "", "", format_credits(total))
        Console().print(table)
        return 0
    finally:
        database.dispose()
