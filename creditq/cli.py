"""`creditq <command>`: each command module registers its own subparser and `run(args) -> int`."""

import argparse
import os
import sqlite3
import sys

from sqlalchemy.exc import DBAPIError

from shared import log_redaction, logs
from shared.config import ConfigError
from shared.errors import DomainError

from .commands import COMMANDS


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="creditq", description="Credit-metered messaging back end.")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for command in COMMANDS:
        command.register(subparsers)
    _name_leaves(parser)
    return parser


def _name_leaves(parser: argparse.ArgumentParser) -> None:
    """Each command that runs knows its own parser, so a flag it does not take is refused with its own usage."""
    for action in parser._subparsers._group_actions if parser._subparsers else ():
        for subparser in dict.fromkeys(action.choices.values()):
            if subparser._subparsers:
                _name_leaves(subparser)
            else:
                subparser.set_defaults(parser=subparser)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        getattr(args, "parser", parser).error(f"unrecognized arguments: {' '.join(unknown)}")
    log_format = os.environ.get("CREDITQ_LOG_FORMAT") or "text"
    if log_format not in logs.LOG_FORMATS:
        print(f"creditq: CREDITQ_LOG_FORMAT={log_format!r} must be one of: {', '.join(logs.LOG_FORMATS)}",
              file=sys.stderr)
        return 2
    logs.configure(log_format)
    log_redaction.install()
    try:
        return args.run(args) or 0
    except (ConfigError, DomainError) as error:
        print(f"creditq: {error}", file=sys.stderr)
        return 2
    except (DBAPIError, sqlite3.Error) as error:  # the database is away, or the file is not one: say so in a line
        cause = getattr(error, "orig", None) or error
        reason = " ".join(str(cause).split()) or type(cause).__name__
        print(f"creditq: the database cannot be used: {reason}{_hint(cause)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


UNDEFINED_TABLE = "42P01"  # PostgreSQL's SQLSTATE for a relation that does not exist (SQLite says "no such table")


def _hint(cause: BaseException) -> str:
    """What to do about a database without creditq's tables: a fresh one, or not the one meant (`creditq dev` keeps
    its SQLite file in ./.creditq of the directory it was started in)."""
    if getattr(cause, "sqlstate", None) == UNDEFINED_TABLE or "no such table" in str(cause):
        return (" (no creditq tables here: run `creditq db upgrade`, or point DATABASE_URL or CREDITQ_DATA_DIR at the"
                " database meant; `creditq dev` keeps its own in ./.creditq where it was started)")
    return ""


if __name__ == "__main__":
    sys.exit(main())
