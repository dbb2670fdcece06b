"""Opaque page cursors: `next_cursor` names the last row of a page; the next page starts before it."""

import base64
import binascii
from collections.abc import Callable, Sequence

from .errors import Problem
from .fields import MAX_BIGINT, whole_number


def encode_cursor(last_id: int) -> str:
    return base64.urlsafe_b64encode(f"before:{last_id}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str | None) -> int | None:
    """The id to continue before; a cursor this API did not return (or one past 64 bits) is a 422."""
    if cursor is None:
        return None
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode("ascii")
    except (ValueError, binascii.Error, UnicodeDecodeError):
        text = ""
    prefix, _, last_id = text.partition(":")
    before = whole_number(last_id, maximum=MAX_BIGINT) if prefix == "before" else None
    if before is None:
        raise Problem(422, "Validation failed", "cursor is not one this API returned.",
                      errors={"cursor": "is not valid"})
    return before


def page_of(rows: Sequence, limit: int, shown: Callable[[object], dict]) -> dict:
    """`{data, next_cursor}` of rows read with `limit + 1`: one more than the page says whether another follows."""
    page = rows[:limit]
    return {"data": [shown(row) for row in page],
            "next_cursor": encode_cursor(page[-1].id) if len(rows) > limit else None}
