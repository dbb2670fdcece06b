"""`creditq <command>`: each command module registers its own subparser and `run(args) -> int`."""

import argparse
import logging
import sys

from shared import log_redaction
from shared.config import ConfigError
from shared.errors import DomainError

from .commands import COMMANDS


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="creditq", description="Credit-metered messaging back end.")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for command in COMMANDS:
        command.register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    log_redaction.install()
    try:
        return args.run(args) or 0
    except (ConfigError, DomainError) as error:
        print(f"creditq: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
