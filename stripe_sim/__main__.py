"""``python -m stripe_sim --port 8082 --database stripe.db --event-duplicates 3``: every knob is a flag and a
STRIPE_SIM_* variable (flags override the environment, which overrides the defaults)."""

from __future__ import annotations

import argparse
import dataclasses
import sys

from .app import DEFAULT_HOST, DEFAULT_PORT, run
from .config import ConfigError, SimulatorConfig


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="stripe_sim", description=__doc__)
    parser.add_argument("--host", default=DEFAULT_HOST)
    parser.add_argument("--port", type=int, default=DEFAULT_PORT)
    parser.add_argument("--database", default="stripe-sim.db", help="the SQLite file that keeps its state")
    for knob in dataclasses.fields(SimulatorConfig):
        parser.add_argument("--" + knob.name.replace("_", "-"), dest=knob.name, metavar="VALUE")
    args = vars(parser.parse_args(sys.argv[1:] if argv is None else argv))
    host, port, database = args.pop("host"), args.pop("port"), args.pop("database")
    config = SimulatorConfig.from_env()
    try:
        config.apply({name: value for name, value in args.items() if value is not None})
    except ConfigError as error:
        parser.error(str(error))
    run(host, port, config, database)


if __name__ == "__main__":
    main()
