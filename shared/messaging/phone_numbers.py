"""Phone numbers in E.164, as Twilio wants them, checked with Google's libphonenumber metadata."""

import functools

import phonenumbers
from phonenumbers import timezone as phonenumber_timezones

from shared.errors import ValidationFailed

_UNKNOWN_TIME_ZONE = "Etc/Unknown"


def parse_e164(raw: str, *, field: str = "to", default_region: str | None = None) -> str:
    """'+1 (415) 555-0100' -> '+14155550100'. Without `default_region` the number must start with '+'.

    Raises ValidationFailed whose `errors` names `field`, so callers can point at the bad input.
    """
    if not isinstance(raw, str) or not raw.strip():
        reason = "must be a phone number such as +14155550100"
        raise ValidationFailed(f"{field} {reason}", errors={field: reason})
    try:
        number = phonenumbers.parse(raw, default_region)
    except phonenumbers.NumberParseException:
        reason = "is not a phone number in international format, such as +14155550100"
        raise ValidationFailed(f"{field} {raw!r} {reason}", errors={field: reason}) from None
    if not phonenumbers.is_valid_number(number):
        reason = "is not a valid phone number"
        raise ValidationFailed(f"{field} {raw!r} {reason}", errors={field: reason})
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


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
