"""Phone numbers in E.164, as Twilio wants them, checked with Google's libphonenumber metadata; and US short codes,
which a sender may be instead (five or six digits, as Twilio writes them in From and To)."""

import functools
import re

import phonenumbers
from phonenumbers import timezone as phonenumber_timezones

from shared.errors import ValidationFailed

_SHORT_CODE = re.compile(r"[0-9]{5,6}")
SHORT_CODE_COUNTRY = "US"
_UNKNOWN_TIME_ZONE = "Etc/Unknown"
_CACHED_UP_TO = 40  # characters: a phone number, however formatted; longer input is parsed, never kept


def parse_e164(raw: str, *, field: str = "to", default_region: str | None = None,
               drop_extension: bool = False) -> str:
    """'+1 (415) 555-0100' -> '+14155550100'. Without `default_region` the number must start with '+'.

    A number with an extension ('+1 415 555 0100 x22') is refused: creditq texts, calls or sends from the number it
    is given, and can reach no extension, so a text would go to whoever answers the line. `drop_extension` reads the
    line alone instead, where the number only names a line: opt-outs, do-not-contact lists, search filters, a
    dunning customer's record (which keeps the extension apart, `extension_of`, and is texted nothing).

    Raises ValidationFailed whose `errors` names `field`, so callers can point at the bad input.
    """
    if not isinstance(raw, str) or not raw.strip():
        reason = "must be a phone number such as +14155550100"
        raise ValidationFailed(f"{field} {reason}", errors={field: reason})
    e164, reason, extension = _parsed(raw, default_region)
    if reason is None and extension and not drop_extension:
        reason = f"has an extension ({extension}), which a text or a call cannot reach; give the number alone"
    if reason is not None:
        raise ValidationFailed(f"{field} {raw!r} {reason}", errors={field: reason})
    return e164


def is_short_code(raw: object) -> bool:
    return isinstance(raw, str) and _SHORT_CODE.fullmatch(raw) is not None


def parse_sender(raw: object, *, field: str = "from") -> str:
    """A sender as `parse_e164` reads it, or a US short code as it is written ('12345'); ValidationFailed naming
    `field` otherwise."""
    stripped = raw.strip() if isinstance(raw, str) else raw
    return stripped if is_short_code(stripped) else parse_e164(raw, field=field)


def is_toll_free(e164: str) -> bool:
    """A toll-free number (the North American 800, 833-888 and the like), by libphonenumber's metadata."""
    return phonenumbers.number_type(phonenumbers.parse(e164, None)) == phonenumbers.PhoneNumberType.TOLL_FREE


def extension_of(raw: str) -> str:
    """The extension a valid number was written with ('' for none, or for what is not a number)."""
    return _parsed(raw, None)[2]


def _parsed(raw: str, default_region: str | None) -> tuple[str | None, str | None, str]:
    """_e164_or_reason, through its cache for what is short enough to be a phone number."""
    parse = _e164_or_reason if len(raw) <= _CACHED_UP_TO else _e164_or_reason.__wrapped__
    return parse(raw, default_region)


@functools.lru_cache(maxsize=8192)  # the same senders (and often recipients) on message after message
def _e164_or_reason(raw: str, default_region: str | None) -> tuple[str | None, str | None, str]:
    """(E.164, None, the extension or '') or (None, why not, '')."""
    try:
        number = phonenumbers.parse(raw, default_region)
    except phonenumbers.NumberParseException:
        return None, "is not a phone number in international format, such as +14155550100", ""
    if not phonenumbers.is_valid_number(number):
        return None, "is not a valid phone number", ""
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164), None, number.extension or ""


@functools.lru_cache(maxsize=4096)  # every settlement asks; parsing is the costly part
def country_of(e164: str) -> str:
    """ISO 3166 region of a valid E.164 number ('+14155550100' -> 'US'); '001' for non-geographic numbers."""
    return phonenumbers.region_code_for_number(phonenumbers.parse(e164, None))


def time_zones_of(e164: str) -> tuple[str, ...]:
    """The IANA zones the number may be in: one for most, several when only the country is known, none if unknown.

    Quiet-hours checks should treat several zones conservatively (all of them must be in hours).
    """
    zones = phonenumber_timezones.time_zones_for_number(phonenumbers.parse(e164, None))
    return tuple(zone for zone in zones if zone != _UNKNOWN_TIME_ZONE)
