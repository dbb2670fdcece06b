"""``python -m stripe_sim --port 8082 --database stripe.db --event-duplicates 3``: every knob is a flag and a
STRIPE_SIM_* variable (flags override the environment, which overrides the defaults)."""

from __future__ import annotations

import argparse
import dataclasses
import sys

from .app import DEFAULT_HOST, DEFAULT_PORT, run
from .config import ConfigError, SimulatorConfig

DEFAULT_DATABASE = "stripe-sim.db"


def add_arguments(parser: argparse.ArgumentParser, *, default_port: int | None = DEFAULT_PORT,
                  default_database: str | None = DEFAULT_DATABASE) -> None:
    """--host, --port, --database and a flag per knob: `python -m stripe_sim` and `creditq stripe-sim` take the
    same ones."""
    parser.add_argument("--host", default=DEFAULT_HOST)
    parser.add_argument("--port", type=int, default=default_port)
    parser.add_argument("--database", default=default_database, help="the SQLite file that keeps its state")
    for knob in dataclasses.fields(SimulatorConfig):
        parser.add_argument("--" + knob.name.replace("_", "-"), dest=knob.name, metavar="VALUE")


def config_from(parser: argparse.ArgumentParser, args: argparse.Namespace) -> SimulatorConfig:
    """The environment's knobs with the flags given on top; a bad value is the parser's error."""
    config = SimulatorConfig.from_env()
    try:
        config.apply({knob.name: getattr(args, knob.name) for knob in dataclasses.fields(SimulatorConfig)
                      if getattr(args, knob.name) is not None})
    except ConfigError as error:
        parser.error(str(error))
    return config


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="stripe_sim", description=__doc__)
    add_arguments(parser)
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    run(args.host, args.port, config_from(parser, args), args.database)


if __name__ == "__main__":
    main()
