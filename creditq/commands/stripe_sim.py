"""`creditq stripe-sim`: the Stripe stand-in, with the key and webhook secret creditq is configured with, its
state in `$CREDITQ_DATA_DIR/stripe-sim.db`, delivering events to `$PUBLIC_BASE_URL/webhooks/stripe`."""

import argparse
import os

from shared.config import load_settings


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "stripe-sim", help="serve the Stripe stand-in (knobs: `creditq stripe-sim -- --help`)", add_help=False,
    )
    parser.add_argument("options", nargs=argparse.REMAINDER, help="stand-in flags, e.g. --event-duplicates 3")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from stripe_sim.__main__ import main

    settings = load_settings()
    os.environ.setdefault("STRIPE_SIM_API_KEY", settings.stripe_api_key)
    os.environ.setdefault("STRIPE_SIM_WEBHOOK_SECRET", settings.stripe_webhook_secret)
    os.environ.setdefault("STRIPE_SIM_WEBHOOK_URL", f"{settings.public_base_url}/webhooks/stripe")
    options = [option for option in args.options if option != "--"]
    if "--port" not in options:
        options += ["--port", str(settings.stripe_sim_port)]
    if "--database" not in options:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        options += ["--database", str(settings.data_dir / "stripe-sim.db")]
    main(options)
    return 0
