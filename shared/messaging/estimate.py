"""What a message costs: one code path for the live estimate, intake, campaigns and settlement.

Intake and campaigns hold `estimate_message(...).credits_total`; settlement charges
`charge_for(<Twilio's num_segments>, ...)`, so an estimate and a charge can only differ by the
segment count Twilio reports.
"""

from collections import Counter
from dataclasses import dataclass
from typing import NamedTuple

from sqlalchemy import case, func, select
from sqlalchemy.orm import Session

from shared.errors import ValidationFailed
from shared.messaging.phone_numbers import country_of, parse_e164, parse_sender
from shared.messaging.rates import SENDER_TYPES, RateCard
from shared.messaging.segments import MAX_BODY_CHARACTERS, count_segments
from shared.models import Account, PhoneNumber
from shared.money import format_credits

CHANNELS = ("sms", "mms")
MAX_MEDIA_URLS = 10  # Twilio's limit per MMS
MAX_RECIPIENTS = 10_000_000
MAX_NUMBERS = 10_000  # numbers listed in `to`: each one is parsed


class Charge(NamedTuple):
    """Millicredits for one sent message: usage, and the carrier fee booked as its own entry."""

    usage: int
    carrier_fee: int


@dataclass(frozen=True, slots=True)
class Estimate:
    """Millicredit amounts include carrier fees, because a hold must cover both.

    credits_per_recipient is the highest price among the recipients when their countries are
    priced differently; credits_total is always the exact sum.
    """

    channel: str
    sender_type: str
    characters: int
    encoding: str
    segments: int
    non_gsm_characters: tuple[str, ...]
    credits_per_recipient: int
    recipients: int
    credits_total: int

    def as_dict(self) -> dict:
        """The API's and the CLI's JSON shape: credits as decimal strings."""
        return {
            "characters": self.characters,
            "encoding": self.encoding,
            "segments": self.segments,
            "credits_per_recipient": format_credits(self.credits_per_recipient),
            "recipients": self.recipients,
            "credits_total": format_credits(self.credits_total),
            "non_gsm_characters": list(self.non_gsm_characters),
            "channel": self.channel,
            "sender_type": self.sender_type,
        }


def charge_for(segments_sent: int, *, country: str, sender_type: str, channel: str, rate_card: RateCard) -> Charge:
    """The charge for one message Twilio sent in `segments_sent` segments (MMS: per message, whatever the count)."""
    if segments_sent < 0:
        raise ValueError(f"segments_sent must not be negative, got {segments_sent}")
    if channel not in CHANNELS:
        raise ValueError(f"channel must be one of {CHANNELS}, got {channel!r}")
    if segments_sent == 0:
        return Charge(0, 0)
    units = 1 if channel == "mms" else segments_sent
    usage = rate_card.price(channel, country=country, sender_type=sender_type) * units
    carrier_fee = rate_card.carrier_fee(channel, country=country, sender_type=sender_type) * units
    return Charge(usage, carrier_fee)


def estimate_message(
    body: str,
    *,
    to: list[str] | None = None,
    recipients: int | None = None,
    sender_type: str = "long_code",
    channel: str | None = None,
    media_urls: list[str] | None = None,
    smart_encoding: bool = False,
    rate_card: RateCard,
) -> Estimate:
    """Price `body` for `to` (E.164 numbers, each priced by its country) or for `recipients` in the card's home country.

    channel None means MMS when media is attached, else SMS. Any bad input raises one
    ValidationFailed whose `errors` names every offending field (to[2], body, ...).
    """
    errors: dict[str, str] = {}
    if channel is None:
        channel = "mms" if media_urls else "sms"
    elif channel not in CHANNELS:
        errors["channel"] = f"must be one of {', '.join(CHANNELS)}"
    if sender_type not in SENDER_TYPES:
        errors["sender_type"] = f"must be one of {', '.join(SENDER_TYPES)}"
    _check_media(media_urls, channel, errors)
    _check_body(body, bool(media_urls), errors)
    countries = _destination_countries(to, recipients, rate_card, errors)
    if errors:
        summary = "; ".join(f"{field} {reason}" for field, reason in errors.items())
        raise ValidationFailed(f"Invalid estimate: {summary}", errors=errors)

    counted = count_segments(body, smart_encoding=smart_encoding)
    if not counted.code_units and not media_urls:  # e.g. only zero-width spaces, which Smart Encoding drops
        reason = "is empty after Smart Encoding; a message needs text or media"
        raise ValidationFailed(f"Invalid estimate: body {reason}", errors={"body": reason})
    segments = 1 if channel == "mms" else counted.segments
    per_country = {
        country: sum(charge_for(segments, country=country, sender_type=sender_type, channel=channel,
                                rate_card=rate_card))
        for country in countries
    }
    return Estimate(
        channel=channel,
        sender_type=sender_type,
        characters=counted.characters,
        encoding=counted.encoding,
        segments=segments,
        non_gsm_characters=counted.non_gsm_characters,
        credits_per_recipient=max(per_country.values()),
        recipients=countries.total(),
        credits_total=sum(per_country[country] * count for country, count in countries.items()),
    )


def sender_type_of_message(messages, accounts):
    """`sender_type_of` as a column of a statement over `messages` joined to their `accounts` (the tables), so the
    steps that run for every message read it with the message row: no statement, no cache of their own."""
    return func.coalesce(
        select(PhoneNumber.type).where(PhoneNumber.account_id == messages.c.account_id,
                                       PhoneNumber.phone == messages.c["from"]).limit(1).scalar_subquery(),
        case((accounts.c.shared_short_code == messages.c["from"], "short_code"), else_="long_code"),
    )


def sender_type_of(session: Session, phone: str, *, account_id: str | None) -> str:
    """The type of the sender number `phone` (of `account_id`, or of any account for the operator): its own number's,
    short code for the shared short code it has (or had) a keyword on; else long code."""
    try:
        phone = parse_sender(phone, field="from")
    except ValidationFailed:
        phone = phone.strip()
    query = select(PhoneNumber.type).where(PhoneNumber.phone == phone)
    shared = select(Account.id).where(Account.shared_short_code == phone)
    if account_id is not None:
        query = query.where(PhoneNumber.account_id == account_id)
        shared = shared.where(Account.id == account_id)
    own = session.scalars(query.limit(1)).first()
    if own is not None:
        return own
    return "short_code" if session.scalar(shared.limit(1)) is not None else "long_code"


def _check_body(body: object, has_media: bool, errors: dict[str, str]) -> None:
    if body is None:
        errors["body"] = "is required"
    elif not isinstance(body, str):
        errors["body"] = "must be a string"
    elif len(body) > MAX_BODY_CHARACTERS:
        errors["body"] = f"is {len(body):,} characters; Twilio sends at most {MAX_BODY_CHARACTERS:,}"
    elif not body.strip() and not has_media:
        errors["body"] = "is empty; a message needs text or media"


def _check_media(media_urls: object, channel: str, errors: dict[str, str]) -> None:
    if media_urls is None or media_urls == []:
        return
    if not isinstance(media_urls, list) or not all(isinstance(url, str) for url in media_urls):
        errors["media_urls"] = "must be a list of URLs"
    elif len(media_urls) > MAX_MEDIA_URLS:
        errors["media_urls"] = f"has {len(media_urls)} URLs; an MMS carries at most {MAX_MEDIA_URLS}"
    elif not all(url.startswith(("https://", "http://")) for url in media_urls):
        errors["media_urls"] = "must be http(s) URLs"
    elif channel == "sms":
        errors["media_urls"] = "media can only be sent on the mms channel"


def _destination_countries(to: object, recipients: object, rate_card: RateCard, errors: dict[str, str]) -> Counter:
    """How many recipients are in each destination country; fills `errors` instead of raising."""
    if recipients is not None and (isinstance(recipients, bool) or not isinstance(recipients, int)
                                   or not 1 <= recipients <= MAX_RECIPIENTS):
        errors["recipients"] = f"must be a whole number from 1 to {MAX_RECIPIENTS:,}"
        return Counter()
    if to is None:
        return Counter({rate_card.home_country: recipients or 1})
    if not isinstance(to, list) or not to:
        errors["to"] = "must be a non-empty list of phone numbers"
        return Counter()
    if len(to) > MAX_NUMBERS:  # each is parsed with libphonenumber; a count prices more at no cost
        errors["to"] = f"lists {len(to):,} numbers; an estimate prices at most {MAX_NUMBERS:,} (or give recipients)"
        return Counter()
    if recipients is not None and recipients != len(to):
        errors["recipients"] = f"is {recipients} but to lists {len(to)} numbers; give one or the other"
    countries: Counter = Counter()
    for index, raw in enumerate(to):
        field = f"to[{index}]"
        try:
            country = country_of(parse_e164(raw, field=field))
        except ValidationFailed as error:
            errors.update(error.errors)
            continue
        if not rate_card.prices_country(country):
            errors[field] = (f"is in {country}, where messages cannot be sent "
                             f"(the rate card {rate_card.name!r} has no price there)")
        countries[country] += 1
    return countries
