"""`creditq estimate "text"`: segments, encoding and credits for a message, from this deployment's rate card;
`creditq estimate --voice-broadcast --recipients N`: what a voice broadcast costs."""

import argparse
import json

from rich.console import Console
from rich.table import Table

from shared.errors import ValidationFailed
from shared.messaging.estimate import CHANNELS, Estimate, estimate_message
from shared.messaging.rates import SENDER_TYPES, default_rate_card
from shared.money import format_credits
from shared.voice.broadcasts import Estimate as BroadcastEstimate
from shared.voice.broadcasts import estimate_broadcast


def register(subparsers) -> None:
    parser = subparsers.add_parser("estimate", help="what a message (or a voice broadcast) costs")
    parser.add_argument("body", nargs="?", help="the message text (not with --voice-broadcast)")
    parser.add_argument("--to", action="extend", nargs="+", default=None, metavar="NUMBER",
                        help="recipient in E.164, e.g. +14155550100 (repeatable; each priced by its country)")
    parser.add_argument("--recipients", type=int, help="price this many recipients in the rate card's home country")
    parser.add_argument("--sender-type", choices=SENDER_TYPES, default="long_code",
                        help="type of the sending number (default: long_code)")
    parser.add_argument("--channel", choices=CHANNELS, help="default: mms with --media-url, else sms")
    parser.add_argument("--media-url", action="append", dest="media_urls", metavar="URL", help="attach media (MMS)")
    parser.add_argument("--smart-encoding", action="store_true", help="apply Twilio's Smart Encoding substitutions")
    parser.add_argument("--voice-broadcast", action="store_true",
                        help="a voice broadcast to --recipients numbers: numbers x expected minutes x rate + detection")
    parser.add_argument("--expected-minutes", type=int, default=1, help="voice broadcast: minutes per answered call")
    parser.add_argument("--machine-detection", action="store_true", help="voice broadcast: with machine detection")
    parser.add_argument("--json", action="store_true", help="print the API's JSON instead of a table")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if args.voice_broadcast:
        if args.body is not None:
            raise ValidationFailed("a voice broadcast's estimate takes no message text", errors={"body": "not taken"})
        broadcast = estimate_broadcast(args.recipients, args.expected_minutes, args.machine_detection,
                                       rate_card=default_rate_card())
        if args.json:
            print(json.dumps(broadcast.as_dict()))
        else:
            Console().print(_broadcast_table(broadcast))
        return 0
    if args.body is None:
        raise ValidationFailed("the message text is required", errors={"body": "is required"})
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


def _broadcast_table(estimate: BroadcastEstimate) -> Table:
    table = Table(title="Voice broadcast estimate", show_header=False)
    table.add_column(style="bold")
    table.add_column()
    table.add_row("Numbers", str(estimate.numbers))
    table.add_row("Expected minutes each", str(estimate.expected_minutes))
    table.add_row("Credits per minute", format_credits(estimate.per_minute))
    table.add_row("Detection per number", format_credits(estimate.detection))
    table.add_row("Credits total", format_credits(estimate.credits))
    return table


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
