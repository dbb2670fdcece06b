"""`creditq twilio-sim`: the Twilio simulator on the account sid and token creditq is configured with."""

import argparse
import os

from shared.config import load_settings


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "twilio-sim", help="serve the Twilio simulator (knobs: `creditq twilio-sim -- --help`)", add_help=False,
    )
    parser.add_argument("options", nargs=argparse.REMAINDER, help="simulator flags, e.g. --port 8081 --rate-429 0.1")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from twilio_sim.__main__ import main

    settings = load_settings()
    os.environ.setdefault("TWILIO_SIM_ACCOUNT_SID", settings.twilio_account_sid)
    os.environ.setdefault("TWILIO_SIM_AUTH_TOKEN", settings.twilio_auth_token)
    options = [option for option in args.options if option != "--"]
    if "--port" not in options:
        options += ["--port", str(settings.simulator_port)]
    main(options)
    return 0
