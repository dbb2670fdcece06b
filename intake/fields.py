"""Typed fields out of a JSON body (or a list's query string), collecting one message per bad field so a 422
lists them all; whole numbers out of query strings, cursors and forms."""

import re
from datetime import UTC, datetime

from multidict import MultiMapping

from shared.errors import ValidationFailed
from shared.messaging.phone_numbers import parse_e164
from shared.messaging.quiet_hours import Window, parse_window
from shared.money import InvalidAmount, parse_credits

_MISSING = object()
_ASCII_DIGITS = re.compile(r"[0-9]+")
_SHORT_CODE = re.compile(r"[0-9]{5,6}")
MAX_BIGINT = 2**63 - 1  # the largest id a BIGINT column holds
# Instants a body or a query may name: far enough from year 1 and 9999 that local dates, cycles and expiries worked
# out from them (months and years added, any zone's offset) stay within what Python's datetime holds.
EARLIEST_INSTANT = datetime(1970, 1, 1, tzinfo=UTC)
LATEST_INSTANT = datetime(9000, 1, 1, tzinfo=UTC)


def whole_number(raw: str, *, maximum: int) -> int | None:
    """The number `raw` spells in ASCII digits, if it is at most `maximum`; else None.

    Not `int()` or `str.isdigit()`: both take other scripts' digits ("²", "٣"), and `int()` takes
    signs, spaces and underscores; a number past `maximum` would overflow a 64-bit column.
    """
    if not _ASCII_DIGITS.fullmatch(raw) or len(raw) > len(str(maximum)):
        return None
    value = int(raw)
    return value if value <= maximum else None


UNKNOWN_FIELD = "is not a known field"
REPEATED = "is given more than once"  # in a query string: one value of the two would be dropped without a word


def refuse_unknown(body: dict, known: frozenset[str]) -> None:
    """A 422 naming every field of `body` not in `known`: a typo (sendAt for send_at) must not be silently ignored,
    least of all on a send, where it would go out at once."""
    _refuse(sorted(name for name in body if name not in known), UNKNOWN_FIELD)


def refuse_repeated(query: MultiMapping[str]) -> None:
    """A 422 naming every name `query` gives more than once."""
    _refuse(_repeated(query), REPEATED)


def _repeated(query: MultiMapping[str]) -> list[str]:
    return sorted({name for name in query if len(query.getall(name)) > 1})


def _refuse(names: list[str], reason: str) -> None:
    if names:
        raise ValidationFailed("Invalid request: " + "; ".join(f"{name} {reason}" for name in names),
                               errors={name: reason for name in names})


class Fields:
    """`fields.credits("limit")` etc. return the value (or None when absent); `done()` raises if any was bad."""

    def __init__(self, body: dict, *, prefix: str = "", errors: dict[str, str] | None = None):
        self.body = body
        self.prefix = prefix
        self.errors: dict[str, str] = {} if errors is None else errors
        self._known: set[str] = set()

    def _raw(self, name: str, required: bool):
        self._known.add(name)
        value = self.body.get(name, _MISSING)
        if value is _MISSING or value is None:
            if required:
                self.fail(name, "is required")
            return _MISSING
        return value

    def fail(self, name: str, reason: str) -> None:
        self.errors.setdefault(self.prefix + name, reason)

    def text(self, name: str, *, required: bool = False, max_length: int = 200) -> str | None:
        value = self._raw(name, required)
        if value is _MISSING:
            return None
        if not isinstance(value, str) or not value.strip():
            self.fail(name, "must be a non-empty string")
        elif len(value) > max_length:
            self.fail(name, f"must be at most {max_length} characters")
        else:
            return value.strip()
        return None

    def credits(self, name: str, *, required: bool = False) -> int | None:
        """A non-negative decimal string of credits ("12.5") in millicredits."""
        value = self._raw(name, required)
        if value is _MISSING:
            return None
        try:
            return parse_credits(value)
        except InvalidAmount as error:
            self.fail(name, str(error))
            return None

    def integer(self, name: str, *, minimum: int, maximum: int) -> int | None:
        value = self._raw(name, False)
        if value is _MISSING:
            return None
        if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= maximum:
            self.fail(name, f"must be a whole number from {minimum} to {maximum}")
            return None
        return value

    def choice(self, name: str, choices: tuple[str, ...], *, required: bool = False) -> str | None:
        value = self._raw(name, required)
        if value is _MISSING:
            return None
        if value not in choices:
            self.fail(name, f"must be one of {', '.join(choices)}")
            return None
        return value

    def strings(self, name: str, *, required: bool = False, max_items: int = 100) -> list[str] | None:
        """A non-empty list of strings."""
        value = self._raw(name, required)
        if value is _MISSING:
            return None
        if not (isinstance(value, list) and 0 < len(value) <= max_items and all(isinstance(v, str) for v in value)):
            self.fail(name, f"must be a list of 1 to {max_items} strings")
            return None
        return value

    def boolean(self, name: str) -> bool | None:
        value = self._raw(name, False)
        if value is _MISSING:
            return None
        if not isinstance(value, bool):
            self.fail(name, "must be true or false")
            return None
        return value

    def instant(self, name: str) -> datetime | None:
        """ISO-8601 with a UTC offset ("2026-01-31T09:00:00-05:00"); a time without one names no instant."""
        value = self._raw(name, False)
        if value is _MISSING:
            return None
        try:
            parsed = datetime.fromisoformat(value) if isinstance(value, str) else None
        except ValueError:
            parsed = None
        if parsed is None or parsed.tzinfo is None:
            self.fail(name, "must be an ISO-8601 time with a UTC offset, such as 2026-01-31T09:00:00Z")
            return None
        if not EARLIEST_INSTANT <= parsed < LATEST_INSTANT:
            self.fail(name, f"must be from {EARLIEST_INSTANT:%Y-%m-%d} up to {LATEST_INSTANT:%Y-%m-%d}")
            return None
        return parsed

    def window(self, name: str) -> Window | None:
        """A daily local-time window {"start": "08:00", "end": "21:00"}; None when absent or null."""
        value = self._raw(name, False)
        if value is _MISSING:
            return None
        try:
            return parse_window(value, field=self.prefix + name)
        except ValidationFailed as error:
            for field, reason in (error.errors or {}).items():
                self.errors.setdefault(field, reason)
            return None

    def obj(self, name: str, *, required: bool = False) -> "Fields | None":
        value = self._raw(name, required)
        if value is _MISSING:
            return None
        if not isinstance(value, dict):
            self.fail(name, "must be an object")
            return None
        return Fields(value, prefix=f"{self.prefix}{name}.", errors=self.errors)

    def done(self, *nested: "Fields | None") -> None:
        """Unknown fields are errors too (a typo must not be silently ignored); raise if anything failed."""
        for fields in (self, *nested):
            if fields is not None:
                for name in set(fields.body) - fields._known:
                    fields.fail(name, UNKNOWN_FIELD)
        if self.errors:
            summary = "; ".join(f"{field} {reason}" for field, reason in sorted(self.errors.items()))
            raise ValidationFailed(f"Invalid request: {summary}", errors=dict(sorted(self.errors.items())))


class QueryFilters(Fields):
    """A list's filters out of its query string (every value a string), checked as a body's fields are: a bad,
    unknown or repeated one is a 422 naming it. `limit` and `cursor` are the page's (intake.cursors,
    bodies.query_limit)."""

    def __init__(self, query: MultiMapping[str], *, page_names: tuple[str, ...] = ("limit", "cursor")):
        super().__init__(dict(query))
        self._known.update(page_names)
        for name in _repeated(query):
            self.fail(name, REPEATED)

    def flag(self, name: str) -> bool | None:
        value = self._raw(name, False)
        if value is _MISSING:
            return None
        if value not in ("true", "false"):
            self.fail(name, "must be true or false")
            return None
        return value == "true"

    def phone(self, name: str) -> str | None:
        """An E.164 number as people write it ("+1 (415) 555-0100" is +14155550100; a `+` left unescaped in a
        query string arrives as a space, and is read as the `+` it was), or a short code's 5 or 6 digits."""
        value = self._raw(name, False)
        if value is _MISSING:
            return None
        if _SHORT_CODE.fullmatch(value):
            return value
        text = value.strip()
        try:  # a `+` left unescaped arrived as a space: put it back, unless the number has one of its own
            return parse_e164(text if "+" in text else "+" + text, field=name, drop_extension=True)
        except ValidationFailed as error:
            self.fail(name, error.errors.get(name, "must be a phone number in E.164 form, such as +14155550100"))
            return None
