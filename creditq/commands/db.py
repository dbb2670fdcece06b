"""`creditq db upgrade`: bring the database schema to the latest migration, then load the priced files (the rate
card, the price list) as new versions where they changed (shared.price_versions)."""

import argparse
from datetime import UTC, datetime

from shared.billing.price_list import PRICE_LISTS
from shared.config import load_settings
from shared.db import Database
from shared.messaging.rates import RATE_CARDS
from shared.migrate import upgrade
from shared.price_versions import load_file


def register(subparsers) -> None:
    parser = subparsers.add_parser("db", help="database schema migrations")
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    upgrade_parser = actions.add_parser("upgrade", help="migrate DATABASE_URL to the latest schema and load the "
                                                        "rate card and price list files where they changed")
    upgrade_parser.add_argument("--revision", default="head", help="target revision (default: head)")
    upgrade_parser.set_defaults(run=run_upgrade)


def run_upgrade(args: argparse.Namespace) -> int:
    settings = load_settings()
    upgrade(settings.database_url, args.revision)
    print(f"database at {settings.database_url.split('@')[-1]} is at revision {args.revision}")
    if args.revision != "head":
        return 0  # an older schema may not have the versions' table yet
    for line in load_priced_files(settings.database_url):
        print(line)
    return 0


def load_priced_files(database_url: str) -> list[str]:
    """Load the rate card and price list files as new versions where they changed (the schema at head); a line
    for each saying which version it is. `creditq dev` does this too, so its sends are priced as in production."""
    database = Database(database_url, pool_size=1)
    lines = []
    try:
        for kind in (RATE_CARDS, PRICE_LISTS):
            with database.unit_of_work() as session:
                version, added = load_file(session, kind, now=datetime.now(UTC))
            label = kind.name.replace("_", " ")
            lines.append(f"{label} {kind.file()}: version {version}" + (" (new)" if added else " (unchanged)"))
    finally:
        database.dispose()
    return lines
