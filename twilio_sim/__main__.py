"""``python -m twilio_sim --port 8090 --rate-429 0.1``: every knob is a flag and a TWILIO_SIM_* variable.

Flags override the environment, which overrides the defaults.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys

from .app import DEFAULT_HOST, DEFAULT_PORT, run
from .config import ConfigError, SimulatorConfig


def add_arguments(parser: argparse.ArgumentParser, *, default_port: int | None = DEFAULT_PORT) -> None:
    """--host, --port and a flag per knob: `python -m twilio_sim` and `creditq twilio-sim` take the same ones."""
    parser.add_argument("--host", default=DEFAULT_HOST)
    parser.add_argument("--port", type=int, default=default_port)
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


def parse_args(argv: list[str]) -> tuple[str, int, SimulatorConfig]:
    parser = argparse.ArgumentParser(prog="twilio_sim", description=__doc__)
    add_arguments(parser)
    args = parser.parse_args(argv)
    return args.host, args.port, config_from(parser, args)


def main(argv: list[str] | None = None) -> None:
    host, port, config = parse_args(sys.argv[1:] if argv is None else argv)
    run(host, port, config)


if __name__ == "__main__":
    main()
