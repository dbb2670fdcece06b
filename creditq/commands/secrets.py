"""`creditq secrets rotate | new-key`: re-encrypt the stored secrets under the first CREDITQ_SECRET_KEY key."""

import argparse
import os

from cryptography.fernet import Fernet

from shared import secrets
from shared.config import ConfigError, load_settings
from shared.db import Database
from shared.models import Base


def register(subparsers) -> None:
    parser = subparsers.add_parser("secrets", help="the deployment key that encrypts stored secrets")
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    rotate_parser = actions.add_parser("rotate", help="re-encrypt every stored secret under the first key of "
                                                      "CREDITQ_SECRET_KEY (new,old,...)")
    rotate_parser.add_argument("--batch", type=int, default=secrets.ROTATE_BATCH, help="rows per transaction")
    rotate_parser.set_defaults(run=run_rotate)
    new_key_parser = actions.add_parser("new-key", help="print a fresh key to put first in CREDITQ_SECRET_KEY")
    new_key_parser.set_defaults(run=run_new_key)


def run_rotate(args: argparse.Namespace) -> int:
    if not os.environ.get("CREDITQ_SECRET_KEY"):
        raise ConfigError("secrets rotate needs CREDITQ_SECRET_KEY: the new key first, then the ones in use")
    if args.batch < 1:
        raise ConfigError("--batch must be at least 1")
    settings = load_settings()
    secrets.use_keys(settings.secret_keys)
    database = Database(settings.database_url)
    try:
        summary = secrets.rotate(database, Base.metadata, batch_size=args.batch)
    finally:
        database.dispose()
    print(summary.line())
    return 0


def run_new_key(args: argparse.Namespace) -> int:
    print(Fernet.generate_key().decode())
    return 0
