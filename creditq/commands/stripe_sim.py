"""`creditq stripe-sim [--port N] [--event-duplicates 3 ...]`: the Stripe stand-in, with the key and webhook
secret creditq is configured with, its state in `$CREDITQ_DATA_DIR/stripe-sim.db` (0600, as every data file),
delivering events to `$PUBLIC_BASE_URL/webhooks/stripe`."""

import argparse
import os
from pathlib import Path

from shared.config import load_settings
from shared.private_files import private_file

from .ports import listening_on


def register(subparsers) -> None:
    from stripe_sim.__main__ import add_arguments

    parser = subparsers.add_parser("stripe-sim", help="serve the Stripe stand-in (knobs: `creditq stripe-sim --help`)")
    add_arguments(parser, default_port=None, default_database=None)  # None: CREDITQ_STRIPE_SIM_PORT, the data dir
    parser.add_argument("after_double_dash", nargs="*", help=argparse.SUPPRESS)  # the older `stripe-sim -- --port N`
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from stripe_sim.__main__ import config_from
    from stripe_sim.app import run as serve

    if args.after_double_dash:
        args = args.parser.parse_args(args.after_double_dash, namespace=args)
        if args.after_double_dash:
            args.parser.error(f"unrecognized arguments: {' '.join(args.after_double_dash)}")
    settings = load_settings()
    os.environ.setdefault("STRIPE_SIM_API_KEY", settings.stripe_api_key)
    os.environ.setdefault("STRIPE_SIM_WEBHOOK_SECRET", settings.stripe_webhook_secret)
    os.environ.setdefault("STRIPE_SIM_WEBHOOK_URL", f"{settings.public_base_url}/webhooks/stripe")
    config = config_from(args.parser, args)
    database = private_file(Path(args.database) if args.database else settings.data_dir / "stripe-sim.db")
    port = args.port or settings.stripe_sim_port
    with listening_on(args.host, port, "--port or CREDITQ_STRIPE_SIM_PORT", "--host"):
        serve(args.host, port, config, database)
    return 0
