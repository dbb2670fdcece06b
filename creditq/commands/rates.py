"""`creditq rates publish FILE`: a new rate card (or with --price-list, price list) version that every running process
uses within seconds; `creditq rates list`: the versions."""

import argparse
from datetime import UTC, datetime

from shared.billing.price_list import PRICE_LISTS
from shared.config import load_settings
from shared.db import Database
from shared.messaging.rates import RATE_CARDS
from shared.price_versions import CHECK_SECONDS, publish, read_json, versions


def register(subparsers) -> None:
    parser = subparsers.add_parser("rates", help="publish and list rate card and price list versions")
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    publish_parser = actions.add_parser("publish", help="make FILE the newest version (checked first)")
    publish_parser.add_argument("file", metavar="FILE", help="a rate card JSON file (shared/messaging/rates.py)")
    publish_parser.add_argument("--price-list", action="store_true",
                                help="FILE is a price list (shared/billing/price_list.json's shape)")
    publish_parser.set_defaults(run=run_publish)
    list_parser = actions.add_parser("list", help="the versions, newest first")
    list_parser.add_argument("--price-list", action="store_true", help="the price list's versions")
    list_parser.set_defaults(run=run_list)


def run_publish(args: argparse.Namespace) -> int:
    kind = PRICE_LISTS if args.price_list else RATE_CARDS
    document = read_json(args.file, kind)
    kind.parse(document, args.file, None)
    database = Database(load_settings().database_url, pool_size=1)
    try:
        with database.unit_of_work() as session:
            version, added = publish(session, kind, document, now=datetime.now(UTC))
    finally:
        database.dispose()
    label = kind.name.replace("_", " ")
    if added:
        print(f"{label} version {version} published: every process prices with it within {CHECK_SECONDS:g} s")
    else:
        print(f"{label} version {version} already has this content: nothing published")
    return 0


def run_list(args: argparse.Namespace) -> int:
    kind = PRICE_LISTS if args.price_list else RATE_CARDS
    database = Database(load_settings().database_url, pool_size=1)
    try:
        with database.read_only() as session:
            for row in versions(session, kind):
                print(f"{row.version}\t{row.published_at.isoformat()}\t{row.origin}\t{row.digest[:12]}")
    finally:
        database.dispose()
    return 0
