"""`creditq estimate "text"`: segments, encoding and credits for a message, from this deployment's rate card."""

import argparse
import json

from rich.console import Console
from rich.table import Table

from shared.messaging.estimate import CHANNELS, Estimate, estimate_message
from shared.messaging.rates import SENDER_TYPES, default_rate_card
from shared.money import format_credits


def register(subparsers) -> None:
    parser = subparsers.add_parser("estimate", help="what a message costs: segments, encoding and credits")
    parser.add_argument("body", help="the message text")
    parser.add_argument("--to", action="extend", nargs="+", default=None, metavar="NUMBER",
                        help="recipient in E.164, e.g. +14155550100 (repeatable; each priced by its country)")
    parser.add_argument("--recipients", type=int, help="price this many recipients in the rate card's home country")
    parser.add_argument("--sender-type", choices=SENDER_TYPES, default="long_code",
                        help="type of the sending number (default: long_code)")
    parser.add_argument("--channel", choices=CHANNELS, help="default: mms with --media-url, else sms")
    parser.add_argument("--media-url", action="append", dest="media_urls", metavar="URL", help="attach media (MMS)")
    parser.add_argument("--smart-encoding", action="store_true", help="apply Twilio's Smart Encoding substitutions")
    parser.add_argument("--json", action="store_true", help="print the API's JSON instead of a table")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    estimate = estimate_message(
        args.body,
        to=args.to,
        recipients=args.recipients,
        sender_type=args.sender_type,
        channel=args.channel,
        media_urls=args.media_urls,
        smart_encoding=args.smart_encoding,
        rate_card=default_rate_card(),
    )
    if args.json:
        print(json.dumps(estimate.as_dict(), ensure_ascii=False))
    else:
        Console().print(_table(estimate))
    return 0


def _table(estimate: Estimate) -> Table:
    table = Table(title="Estimate", show_header=False)
    table.add_column(style="bold")
    table.add_column()
    table.add_row("Channel", f"{estimate.channel} from a {estimate.sender_type.replace('_', ' ')}")
    table.add_row("Characters", str(estimate.characters))
    table.add_row("Encoding", estimate.encoding)
    table.add_row("Segments", str(estimate.segments))
    if estimate.non_gsm_characters:
        forced = ", ".join(f"{character!r} U+{ord(character):04X}" for character in estimate.non_gsm_characters)
        table.add_row("Forced UCS-2 by", forced)
    table.add_row("Credits per recipient", format_credits(estimate.credits_per_recipient))
    table.add_row("Recipients", str(estimate.recipients))
    table.add_row("Credits total", format_credits(estimate.credits_total))
    return table
