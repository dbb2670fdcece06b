"""``python -m twilio_sim --port 8090 --rate-429 0.1``: every knob is a flag and a TWILIO_SIM_* variable.

Flags override the environment, which overrides the defaults.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import inspect
import sys

from .app import DEFAULT_HOST, DEFAULT_PORT, run
from .config import ENV_PREFIX, ConfigError, SimulatorConfig


def add_arguments(parser: argparse.ArgumentParser, *, default_port: int | None = DEFAULT_PORT,
                  defaults: dict[str, str] | None = None) -> None:
    """--host, --port and a flag per knob, each with its description: `python -m twilio_sim` and `creditq
    twilio-sim` take the same ones. `defaults` names where a caller takes a default from instead."""
    defaults = defaults or {}
    parser.add_argument("--host", default=DEFAULT_HOST, help=f"address to listen on (default: {DEFAULT_HOST})")
    parser.add_argument("--port", type=int, default=default_port,
                        help=f"port to listen on (default: {defaults.get('port', default_port)})")
    said = knob_descriptions()
    for knob in dataclasses.fields(SimulatorConfig):
        default = knob.default_factory() if knob.default_factory is not dataclasses.MISSING else knob.default
        default = defaults.get(knob.name, f"{default}; env {ENV_PREFIX}{knob.name.upper()}")
        parser.add_argument("--" + knob.name.replace("_", "-"), dest=knob.name, metavar="VALUE",
                            help=f"{said.get(knob.name, '')} (default: {default})".strip().replace("%", "%%"))


def knob_descriptions() -> dict[str, str]:
    """Each knob's description: the string under its field in SimulatorConfig, where it is written once."""
    fields = ast.parse(inspect.getsource(SimulatorConfig)).body[0].body
    return {field.target.id: " ".join(said.value.value.split())
            for field, said in zip(fields, fields[1:])
            if isinstance(field, ast.AnnAssign) and isinstance(said, ast.Expr)
            and isinstance(said.value, ast.Constant) and isinstance(said.value.value, str)}


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
