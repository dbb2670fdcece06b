"""Twilio's test-credential magic numbers, so error paths can be exercised on purpose.

See https://www.twilio.com/docs/iam/test-credentials. ``+15005550006`` is the valid test
``From``; any number not listed here is accepted.
"""

from __future__ import annotations

from .errors import TwilioError

VALID_TEST_FROM = "+15005550006"

_FROM_ERRORS: dict[str, tuple[int, str]] = {
    "+15005550001": (
        21212,
        "The 'From' number +15005550001 is not a valid phone number, shortcode, "
        "or alphanumeric sender ID.",
    ),
    "+15005550007": (
        21606,
        "The 'From' phone number provided is not a valid, message-capable Twilio "
        "phone number for this destination.",
    ),
    "+15005550008": (
        21611,
        "This 'From' number has exceeded the maximum number of queued messages",
    ),
}

_TO_ERRORS: dict[str, tuple[int, str]] = {
    "+15005550001": (21211, "The 'To' number +15005550001 is not a valid phone number."),
    "+15005550002": (
        21612,
        "The 'To' phone number: +15005550002, is not currently reachable using the "
        "'From' phone number via SMS.",
    ),
    "+15005550003": (
        21408,
        "Permission to send an SMS has not been enabled for the region indicated by "
        "the 'To' number: +15005550003.",
    ),
    "+15005550004": (21610, "Attempt to send to unsubscribed recipient"),
    "+15005550009": (21614, "'To' number is not a valid mobile number"),
}


def check_magic_numbers(to: str, from_: str | None) -> None:
    """Raise the error Twilio gives for a magic ``From`` (checked first) or ``To``."""
    for number, errors in ((from_, _FROM_ERRORS), (to, _TO_ERRORS)):
        if number in errors:
            code, message = errors[number]
            raise TwilioError(400, code, message)
