"""`creditq account cancel|reactivate|mark-spam ACCOUNT_ID`: an account's life, straight into DATABASE_URL.

The same use cases as the operator's routes (shared.lifecycle.account_life), recorded as account events
with the actor `cli`. Web processes see the keys a cancel revokes within their key cache's few seconds.
"""

import argparse
from datetime import UTC, datetime

from shared.config import ConfigError, load_settings
from shared.db import Database
from shared.ledger.accounts import ROLLOVER_POLICIES
from shared.ledger.expiry import CYCLE_MONTHS
from shared.lifecycle import account_life
from shared.money import InvalidAmount, format_credits, parse_credits

ACTOR = "cli"


def register(subparsers) -> None:
    parser = subparsers.add_parser("account", help="cancel, reactivate or mark an account as spam")
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    cancel = actions.add_parser("cancel", help="stop its sending, expire its plan credits, revoke its keys")
    cancel.add_argument("account_id", metavar="ACCOUNT_ID")
    cancel.add_argument("--reason", default=account_life.CANCELED_BY_OPERATOR, help="its status_reason")
    cancel.set_defaults(run=run_cancel)
    spam = actions.add_parser("mark-spam", help="flag it as spam (never-expiring credits removed) and cancel it")
    spam.add_argument("account_id", metavar="ACCOUNT_ID")
    spam.set_defaults(run=run_mark_spam)
    reactivate = actions.add_parser("reactivate", help="reopen a canceled account on a plan; prints its new key")
    reactivate.add_argument("account_id", metavar="ACCOUNT_ID")
    reactivate.add_argument("--monthly-credits", required=True, help="the plan's monthly credits, e.g. 500")
    reactivate.add_argument("--cycle", choices=tuple(CYCLE_MONTHS), default="monthly")
    reactivate.add_argument("--rollover", choices=ROLLOVER_POLICIES, default="none")
    reactivate.set_defaults(run=run_reactivate)


def run_cancel(args: argparse.Namespace) -> int:
    reason = args.reason.strip()
    if not 0 < len(reason) <= account_life.REASON_MAX_LENGTH:  # as POST .../cancel takes it, before any change
        raise ConfigError(f"--reason must be 1 to {account_life.REASON_MAX_LENGTH} characters")
    canceled = _in_unit_of_work(lambda session, now: account_life.cancel_account(
        session, args.account_id, actor=ACTOR, now=now, reason=reason))
    print(f"account {args.account_id} {'canceled' if canceled.changed else 'was canceled already'}")
    return 0


def run_mark_spam(args: argparse.Namespace) -> int:
    marked = _in_unit_of_work(lambda session, now: account_life.mark_spam(session, args.account_id, actor=ACTOR,
                                                                          now=now))
    print(f"account {args.account_id} marked as spam and canceled" if marked.changed
          else f"account {args.account_id} was marked as spam already")
    return 0


def run_reactivate(args: argparse.Namespace) -> int:
    try:
        monthly = parse_credits(args.monthly_credits)
    except InvalidAmount as error:
        raise ConfigError(f"--monthly-credits {error}") from None
    account, api_key = _in_unit_of_work(lambda session, now: account_life.reactivate_account(
        session, args.account_id, plan_monthly_credits=monthly, plan_cycle=args.cycle, plan_rollover=args.rollover,
        actor=ACTOR, now=now))
    print(f"account {account.id} active, balance {format_credits(account.balance)} credits; its new API key "
          f"(shown once): {api_key}")
    return 0


def _in_unit_of_work(action):
    database = Database(load_settings().database_url)
    try:
        with database.unit_of_work() as session:
            return action(session, datetime.now(UTC))
    finally:
        database.dispose()
