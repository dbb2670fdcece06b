"""`creditq db upgrade`: bring the database schema to the latest migration."""

import argparse

from shared.config import load_settings
from shared.migrate import upgrade


def register(subparsers) -> None:
    parser = subparsers.add_parser("db", help="database schema migrations")
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    upgrade_parser = actions.add_parser("upgrade", help="migrate DATABASE_URL to the latest schema")
    upgrade_parser.add_argument("--revision", default="head", help="target revision (default: head)")
    upgrade_parser.set_defaults(run=run_upgrade)


def run_upgrade(args: argparse.Namespace) -> int:
    settings = load_settings()
    upgrade(settings.database_url, args.revision)
    print(f"database at {settings.database_url.split('@')[-1]} is at revision {args.revision}")
    return 0
