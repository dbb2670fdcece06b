"""`creditq data erase PHONE` and `creditq data redact-expired`: personal data over time, straight into
DATABASE_URL (shared.operations.erasure and retention)."""

import argparse
from datetime import UTC, datetime

from shared.config import ConfigError, load_settings
from shared.db import Database
from shared.operations import erasure, retention


def register(subparsers) -> None:
    parser = subparsers.add_parser("data", help="erase a phone number's data, redact what retention has expired")
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    erase = actions.add_parser("erase", help="erase one phone number's messages, calls, recipients and events (its "
                                             "opt-outs are kept)")
    erase.add_argument("phone", help="the number, such as +14155550100 or \"+1 (415) 555-0100\"")
    erase.set_defaults(run=run_erase)
    redact = actions.add_parser("redact-expired", help="redact now what is older than CREDITQ_RETENTION_DAYS (the "
                                                       "scheduler does it daily)")
    redact.set_defaults(run=run_redact_expired)


def run_erase(args: argparse.Namespace) -> int:
    database = Database(load_settings().database_url)
    try:
        with database.unit_of_work() as session:
            erased = erasure.erase_phone(session, args.phone, now=datetime.now(UTC))
    finally:
        database.dispose()
    print(f"erased {erased.phone}: {erased.messages} message(s), {erased.calls} call(s), {erased.recipients} campaign "
          f"recipient(s), {erased.events} event(s); {erased.in_flight} message(s) and call(s) in flight left (erase "
          "again once final); "
          f"{erased.opt_outs_kept} opt-out(s) kept so the number is never texted again")
    return 0


def run_redact_expired(args: argparse.Namespace) -> int:
    settings = load_settings()
    if settings.retention_days is None:
        raise ConfigError("CREDITQ_RETENTION_DAYS is not set: nothing expires")
    database = Database(settings.database_url)
    try:
        redacted = retention.redact_expired(database, now=datetime.now(UTC), retention_days=settings.retention_days)
    finally:
        database.dispose()
    print(f"redacted {redacted.messages} message(s), {redacted.campaigns} campaign(s)' recipients, "
          f"{redacted.events} event(s) older than {settings.retention_days} days")
    return 0
