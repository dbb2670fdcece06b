"""Credits travel as decimal strings at the edges and as integer millicredits inside."""

import re
from decimal import Decimal

MILLICREDITS_PER_CREDIT = 1000
MAX_CREDITS = 10**12  # far above any real balance, far below BIGINT's 9.2e18 millicredits
_DECIMAL = re.compile(r"-?[0-9]{1,16}(\.[0-9]{1,16})?", re.ASCII)
_LONG_DECIMAL = re.compile(r"-?[0-9]+(\.[0-9]+)?", re.ASCII)  # more digits than _DECIMAL: judged by its value
MAX_DECIMAL_LENGTH = 64  # characters of such a decimal read at all


class InvalidAmount(ValueError):
    """A credits string that is not a decimal with at most three fractional digits."""


def parse_credits(value: str | int, *, allow_negative: bool = False) -> int:
    """Turn "1.5" (or 2) into 1500 millicredits; refuse floats and sub-millicredit precision.

    Only ASCII digits with an optional sign and fraction (around them, spaces are forgiven): no
    exponents, underscores or other scripts' digits, all of which Python's Decimal would quietly accept.
    """
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise InvalidAmount("must be a decimal string such as \"12.5\"")
    text = str(value).strip()
    if not (_DECIMAL.fullmatch(text) or len(text) <= MAX_DECIMAL_LENGTH and _LONG_DECIMAL.fullmatch(text)):
        raise InvalidAmount(f"must be a decimal string such as \"12.5\", not {text[:40]!r}")
    amount = Decimal(text)
    shown = repr(text[:40])
    if abs(amount) > MAX_CREDITS:
        raise InvalidAmount(f"{shown} is beyond the largest amount, {MAX_CREDITS} credits")
    millicredits = amount * MILLICREDITS_PER_CREDIT
    if millicredits != millicredits.to_integral_value():
        raise InvalidAmount(f"{shown} has more precision than a thousandth of a credit")
    if millicredits < 0 and not allow_negative:
        raise InvalidAmount(f"{shown} is negative")
    return int(millicredits)


def format_credits(millicredits: int) -> str:
    """1500 -> "1.5", 2000 -> "2", -250 -> "-0.25": the shortest exact decimal string."""
    sign = "-" if millicredits < 0 else ""
    whole, fraction = divmod(abs(millicredits), MILLICREDITS_PER_CREDIT)
    if not fraction:
        return f"{sign}{whole}"
    return f"{sign}{whole}.{fraction:03d}".rstrip("0")


def credits_phrase(millicredits: int) -> str:
    """1000 -> "1 credit", 1500 -> "1.5 credits": an amount as a sentence says it."""
    return f"{format_credits(millicredits)} credit{'' if millicredits == MILLICREDITS_PER_CREDIT else 's'}"
