"""`creditq ledger verify [--account ID]`: check the ledger's invariants; exit 1 when anything drifted."""

import argparse

from shared.config import load_settings
from shared.db import Database
from shared.ledger.accounts import get_account
from shared.ledger.verify import verify


def register(subparsers) -> None:
    parser = subparsers.add_parser("ledger", help="inspect the credit ledger")
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    verify_parser = actions.add_parser("verify", help="check every ledger invariant (exit 1 on drift)")
    verify_parser.add_argument("--account", metavar="ID", help="check only this account")
    verify_parser.set_defaults(run=run_verify)


def run_verify(args: argparse.Namespace) -> int:
    database = Database(load_settings().database_url)
    try:
        with database.unit_of_work() as session:
            if args.account is not None:  # an unknown account has no drift, but "clean" would mislead
                get_account(session, args.account)
            drifts = verify(session, args.account)
    finally:
        database.dispose()
    for drift in drifts:
        print(drift)
    scope = f"account {args.account}" if args.account else "all accounts"
    print(f"ledger verify ({scope}): {len(drifts)} drift(s)" if drifts else f"ledger verify ({scope}): clean")
    return 1 if drifts else 0
