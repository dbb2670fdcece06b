"""`creditq month-end run --period YYYY-MM [--dry-run]`: the scheduler's month-end, by hand, with progress."""

import argparse
from datetime import UTC, datetime

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from shared.billing import month_end
from shared.billing.calendar import Period
from shared.billing.gateways import gateway_from_settings
from shared.config import ConfigError, load_settings
from shared.db import Database
from shared.money import format_credits


def register(subparsers) -> None:
    parser = subparsers.add_parser("month-end", help="close a month for every account (the scheduler's job)")
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    run_parser = actions.add_parser("run", help="expire, bill, charge numbers, grant and allocate for a month")
    run_parser.add_argument("--period", required=True, metavar="YYYY-MM", help="the month that ended, e.g. 2026-11")
    run_parser.add_argument("--dry-run", action="store_true", help="report what would happen; write and charge nothing")
    run_parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    try:
        period = Period.parse(args.period)
    except ValueError as error:
        raise ConfigError(str(error)) from None
    settings = load_settings()
    database = Database(settings.database_url)
    console = Console(stderr=True)
    try:
        total = month_end.count_accounts(database)
        columns = (TextColumn("month-end {task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
        with Progress(*columns, console=console, transient=True) as progress:
            task = progress.add_task(f"{period}{' (dry run)' if args.dry_run else ''}", total=total)
            summary = month_end.run(database, None if args.dry_run else gateway_from_settings(settings), period,
                                    now=datetime.now(UTC), dry_run=args.dry_run,
                                    progress=lambda done: progress.advance(task, done.accounts))
    finally:
        database.dispose()
    Console().print(summary_table(summary))
    return 1 if summary.failed else 0


def summary_table(summary: month_end.Summary) -> Table:
    table = Table(title=f"month-end {summary.period}{' (dry run: nothing written)' if summary.dry_run else ''}")
    table.add_column("")
    table.add_column("", justify="right")
    rows = [("accounts", summary.accounts), ("periods closed", summary.closed),
            ("already closed", summary.already_closed), ("not ended yet", summary.not_ended),
            ("created after the period", summary.not_opened),
            ("failed", len(summary.failed)), ("credits expired", format_credits(summary.expired)),
            ("credits billed", format_credits(summary.billed)),
            ("phone number credits", format_credits(summary.number_fees)),
            ("credits granted", format_credits(summary.granted)),
            ("credits allocated to users", format_credits(summary.allocated)),
            ("payments succeeded", summary.payments_succeeded), ("payments declined", summary.payments_declined),
            ("payments to retry", summary.payments_pending),
            ("accounts advised a cheaper plan", summary.advised),
            ("their saving over three months (cents)", summary.advice_saving_cents),
            ("accounts running out before next month-end", summary.running_out)]
    for name, value in rows:
        table.add_row(name, str(value))
    for account_id in summary.failed:
        table.add_row("failed account", account_id)
    return table
