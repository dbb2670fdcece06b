"""``python -m twilio_sim --port 8090 --rate-429 0.1``: every knob is a flag and a TWILIO_SIM_* variable.

Flags override the environment, which overrides the defaults.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys

from .app import DEFAULT_HOST, DEFAULT_PORT, run
from .config import ConfigError, SimulatorConfig


def parse_args(argv: list[str]) -> tuple[str, int, SimulatorConfig]:
    parser = argparse.ArgumentParser(prog="twilio_sim", description=__doc__)
    parser.add_argument("--host", default=DEFAULT_HOST)
    parser.add_argument("--port", type=int, default=DEFAULT_PORT)
    for knob in dataclasses.fields(SimulatorConfig):
        parser.add_argument("--" + knob.name.replace("_", "-"), dest=knob.name, metavar="VALUE")
    args = vars(parser.parse_args(argv))
    host, port = args.pop("host"), args.pop("port")
    config = SimulatorConfig.from_env()
    try:
        config.apply({name: value for name, value in args.items() if value is not None})
    except ConfigError as error:
        parser.error(str(error))
    return host, port, config


def main(argv: list[str] | None = None) -> None:
    host, port, config = parse_args(sys.argv[1:] if argv is None else argv)
    run(host, port, config)


if __name__ == "__main__":
    main()
