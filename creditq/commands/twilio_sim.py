"""`creditq twilio-sim [--port N] [--rate-429 0.1 ...]`: the Twilio simulator on creditq's account sid and token."""

import argparse
import os

from shared.config import load_settings

from .ports import listening_on


def register(subparsers) -> None:
    from twilio_sim.__main__ import add_arguments

    parser = subparsers.add_parser("twilio-sim", help="serve the Twilio simulator (knobs: `creditq twilio-sim --help`)")
    add_arguments(parser, default_port=None, defaults={  # None: CREDITQ_SIMULATOR_PORT
        "port": "CREDITQ_SIMULATOR_PORT", "account_sid": "TWILIO_ACCOUNT_SID", "auth_token": "TWILIO_AUTH_TOKEN"})
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from twilio_sim.__main__ import config_from
    from twilio_sim.app import run as serve

    settings = load_settings()
    os.environ.setdefault("TWILIO_SIM_ACCOUNT_SID", settings.twilio_account_sid)
    os.environ.setdefault("TWILIO_SIM_AUTH_TOKEN", settings.twilio_auth_token)
    config = config_from(args.parser, args)
    port = args.port or settings.simulator_port
    with listening_on(args.host, port, "--port or CREDITQ_SIMULATOR_PORT", "--host"):
        serve(args.host, port, config)
    return 0
