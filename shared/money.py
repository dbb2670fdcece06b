"""Credits travel as decimal strings at the edges and as integer millicredits inside."""

from decimal import Decimal, InvalidOperation

MILLICREDITS_PER_CREDIT = 1000
MAX_CREDITS = 10**12  # far above any real balance, far below BIGINT's 9.2e18 millicredits


class InvalidAmount(ValueError):
    """A credits string that is not a decimal with at most three fractional digits."""


def parse_credits(value: str | int, *, allow_negative: bool = False) -> int:
    """Turn "1.5" (or 2) into 1500 millicredits; refuse floats and sub-millicredit precision."""
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise InvalidAmount("credits must be a decimal string such as \"12.5\"")
    try:
        amount = Decimal(str(value).strip())
    except InvalidOperation:
        raise InvalidAmount(f"{value!r} is not a decimal number of credits") from None
    if not amount.is_finite():
        raise InvalidAmount(f"{value!r} is not a finite number of credits")
    if abs(amount) > MAX_CREDITS:
        raise InvalidAmount(f"{value!r} is beyond the largest amount, {MAX_CREDITS} credits")
    millicredits = amount * MILLICREDITS_PER_CREDIT
    if millicredits != millicredits.to_integral_value():
        raise InvalidAmount(f"{value!r} has more precision than a thousandth of a credit")
    if millicredits < 0 and not allow_negative:
        raise InvalidAmount(f"{value!r} is negative")
    return int(millicredits)


def format_credits(millicredits: int) -> str:
    """1500 -> "1.5", 2000 -> "2", -250 -> "-0.25": the shortest exact decimal string."""
    sign = "-" if millicredits < 0 else ""
    whole, fraction = divmod(abs(millicredits), MILLICREDITS_PER_CREDIT)
    if not fraction:
        return f"{sign}{whole}"
    return f"{sign}{whole}.{fraction:03d}".rstrip("0")
