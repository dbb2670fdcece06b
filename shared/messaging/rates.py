"""The rate card: what each billable item costs, per destination country and sender type, as data.

A deployment prices its traffic with the newest rate card version in the database (shared.price_versions):
`creditq db upgrade` loads the JSON file (shared/messaging/rate_cards/us.json, or the one RATE_CARD_PATH names)
as a version when it changed, and `creditq rates publish FILE` adds one. Processes read it with
`current_rate_card`, which re-checks the newest version every few seconds. Shape:

    {"name": "...", "home_country": "US",
     "countries": {"US": {"rates": {"sms": {"long_code": "1", "toll_free": "1.5", "short_code": "1"},
                                    "mms": "2", ...every item in ITEMS...},
                          "carrier_fees": {"sms": "0", "mms": "0"}},
                   "default": {...optional, same shape...}}}

A price is a credits string (the same for every sender type) or an object giving one per sender
type. Countries the card does not list use its "default" entry when it has one; otherwise sending
there is refused (NoRate, a 422), because pricing a foreign destination at home rates would
undercharge. The bundled US card has no default. `home_country` prices estimates that only give a
recipient count. Receiving is free, so no inbound item exists. Carrier fees pass through per
segment (per message for MMS) and are booked as their own ledger entry.

One price is not on the card, because it is the product's and the same everywhere: a toll-free resend
(shared.messaging.reprocessing) costs TOLL_FREE_RESEND, by the body's length instead of its segments.
"""

import functools
import os
import re
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from shared import price_versions
from shared.config import ConfigError
from shared.errors import ValidationFailed
from shared.money import InvalidAmount, parse_credits
from shared.price_versions import Kind

BUNDLED_RATE_CARD = Path(__file__).parent / "rate_cards" / "us.json"
RATE_CARD_PATH_VARIABLE = "RATE_CARD_PATH"

SENDER_TYPES = ("long_code", "toll_free", "short_code")
# Each item and the unit its price is for.
ITEMS = {
    "sms": "segment",
    "mms": "message",
    "call_outgoing": "minute",
    "voice_broadcast": "minute",
    "answering_machine_detection": "number",
    "call_forwarding": "minute",
    "voicemail": "voicemail",
    "transcription": "transcription",
    "phone_number": "month",
}
CARRIER_FEE_CHANNELS = ("sms", "mms")
DEFAULT_COUNTRY = "default"
_COUNTRY_CODE = re.compile(r"[A-Z]{2}")


@dataclass(frozen=True)
class PerCharacters:
    """A flat price for each started block of `characters` of a body (its code points, as estimates count them)."""

    millicredits: int
    characters: int

    def price(self, body: str) -> int:
        return -(-len(body) // self.characters) * self.millicredits


# What a text resent from the account's toll-free number costs, hold and charge, instead of segments x rate:
# 1 credit per 160 characters (161 characters: 2 credits), no carrier fee.
TOLL_FREE_RESEND = PerCharacters(millicredits=1000, characters=160)


class NoRate(ValidationFailed):
    """The card does not price this destination."""

    title = "Destination not priced"


@dataclass(frozen=True)
class RateCard:
    """Prices in integer millicredits, keyed (country, item, sender_type)."""

    name: str
    home_country: str
    prices: dict[tuple[str, str, str], int]
    carrier_fees: dict[tuple[str, str, str], int]
    countries: frozenset[str]
    version: int | None = None  # its price_versions number; None: read from the file, no version loaded yet

    def price(self, item: str, *, country: str, sender_type: str = "long_code") -> int:
        """Millicredits for one unit of `item` (see ITEMS) to `country` from a `sender_type` number."""
        return self.prices[self._key(country, item, sender_type)]

    def carrier_fee(self, channel: str, *, country: str, sender_type: str = "long_code") -> int:
        """Millicredits passed through per segment (sms) or per message (mms)."""
        return self.carrier_fees[self._key(country, channel, sender_type)]

    def prices_country(self, country: str) -> bool:
        return country in self.countries or DEFAULT_COUNTRY in self.countries

    def _key(self, country: str, item: str, sender_type: str) -> tuple[str, str, str]:
        if sender_type not in SENDER_TYPES:
            raise ValidationFailed(f"sender_type {sender_type!r} is not one of {', '.join(SENDER_TYPES)}",
                                   errors={"sender_type": f"must be one of {', '.join(SENDER_TYPES)}"})
        if country not in self.countries:
            if DEFAULT_COUNTRY not in self.countries:
                reason = f"the rate card {self.name!r} has no rates for country {country}"
                raise NoRate(reason, errors={"country": reason})
            country = DEFAULT_COUNTRY
        return country, item, sender_type


def parse_rate_card(data: object, *, source: str, version: int | None = None) -> RateCard:
    """Validate a decoded card; any problem is a ConfigError naming `source` and the offending key."""

    def fail(where: str, reason: str) -> ConfigError:
        return ConfigError(f"rate card {source}: {where}: {reason}")

    def mapping(value: object, where: str, allowed: set[str], required: set[str]) -> dict:
        if not isinstance(value, dict):
            raise fail(where, "must be an object")
        if unknown := set(value) - allowed:
            raise fail(where, f"unknown keys {', '.join(sorted(unknown))}")
        if missing := required - set(value):
            raise fail(where, f"missing keys {', '.join(sorted(missing))}")
        return value

    def credits(value: object, where: str) -> int:
        try:
            return parse_credits(value)
        except InvalidAmount as error:
            raise fail(where, str(error)) from None

    def per_sender_type(value: object, where: str) -> dict[str, int]:
        if isinstance(value, dict):
            value = mapping(value, where, set(SENDER_TYPES), set(SENDER_TYPES))
            return {sender_type: credits(value[sender_type], f"{where}.{sender_type}") for sender_type in SENDER_TYPES}
        amount = credits(value, where)
        return dict.fromkeys(SENDER_TYPES, amount)

    card = mapping(data, "top level", {"name", "home_country", "countries"}, {"name", "home_country", "countries"})
    name = card["name"]
    if not isinstance(name, str) or not name:
        raise fail("name", "must be a non-empty string")
    countries = card["countries"]
    if not isinstance(countries, dict) or not countries:
        raise fail("countries", "must be an object pricing at least one country")
    prices: dict[tuple[str, str, str], int] = {}
    carrier_fees: dict[tuple[str, str, str], int] = {}
    for country, entry in countries.items():
        if country != DEFAULT_COUNTRY and not _COUNTRY_CODE.fullmatch(country):
            raise fail(f"countries.{country}", "must be an ISO 3166 alpha-2 code such as US, or 'default'")
        entry = mapping(entry, f"countries.{country}", {"rates", "carrier_fees"}, {"rates"})
        rates = mapping(entry["rates"], f"countries.{country}.rates", set(ITEMS), set(ITEMS))
        fees = mapping(entry.get("carrier_fees", {}), f"countries.{country}.carrier_fees",
                       set(CARRIER_FEE_CHANNELS), set())
        for item in ITEMS:
            for sender_type, amount in per_sender_type(rates[item], f"countries.{country}.rates.{item}").items():
                prices[country, item, sender_type] = amount
        for channel in CARRIER_FEE_CHANNELS:
            amounts = per_sender_type(fees.get(channel, "0"), f"countries.{country}.carrier_fees.{channel}")
            for sender_type, amount in amounts.items():
                carrier_fees[country, channel, sender_type] = amount
    home_country = card["home_country"]
    if home_country not in countries:
        raise fail("home_country", f"{home_country!r} is not priced in countries")
    return RateCard(name=name, home_country=home_country, prices=prices, carrier_fees=carrier_fees,
                    countries=frozenset(countries), version=version)


def load_rate_card(path: str | Path) -> RateCard:
    return parse_rate_card(price_versions.read_json(str(path), RATE_CARDS), source=str(path))


def rate_card_file() -> str:
    """The file `creditq db upgrade` loads: RATE_CARD_PATH when set, else the bundled US card."""
    return os.environ.get(RATE_CARD_PATH_VARIABLE) or str(BUNDLED_RATE_CARD)


RATE_CARDS = Kind("rate_card", file=rate_card_file,
                  parse=lambda data, source, version: parse_rate_card(data, source=source, version=version))


def current_rate_card(bind: Engine | Session) -> RateCard:
    """The newest rate card version as this process sees it (at most CHECK_SECONDS old: shared.price_versions)."""
    return price_versions.current(bind, RATE_CARDS)


@functools.cache
def default_rate_card() -> RateCard:
    """The card in the file db upgrade loads, read once: what tests and a database without versions price with."""
    path = rate_card_file()
    try:
        return load_rate_card(path)
    except ConfigError as error:
        if path == str(BUNDLED_RATE_CARD):
            raise
        raise ConfigError(f"{RATE_CARD_PATH_VARIABLE}={path}: {error}") from None
