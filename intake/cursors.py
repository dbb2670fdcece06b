"""Opaque page cursors: `next_cursor` names the last row of a page; the next page starts before it.

Every list pages the same way: rows newest first, `limit + 1` read to know whether another page follows
(`page_of`), the next page's rows below the last one shown: `id < before` (messages, kept in `created_at`
order: below its (created_at, id), shared.messaging.search). Ids are bigints or the strings of shared.ids
(`text_ids=True`). Either way a page is a range of keys below the last one shown, so rows inserted while a
client pages never shift the pages still to come: each row that was there is listed once.
"""

import base64
import binascii
import re
from collections.abc import Callable, Sequence

from .errors import Problem
from .fields import MAX_BIGINT, whole_number

_TEXT_ID = re.compile(r"[a-z]{1,8}_[0-9a-z]{1,32}")  # shared.ids: prefix_ and base32


def encode_cursor(last_id: int | str) -> str:
    return base64.urlsafe_b64encode(f"before:{last_id}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str | None, *, text_ids: bool = False) -> int | str | None:
    """The id to continue before; a cursor this API did not return (or one past 64 bits) is a 422."""
    if cursor is None:
        return None
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode("ascii")
    except (ValueError, binascii.Error, UnicodeDecodeError):
        text = ""
    prefix, _, last_id = text.partition(":")
    if prefix != "before":
        before = None
    elif text_ids:
        before = last_id if _TEXT_ID.fullmatch(last_id) else None
    else:
        before = whole_number(last_id, maximum=MAX_BIGINT)
    if before is None:
        raise Problem(422, "Validation failed", "cursor is not one this API returned.",
                      errors={"cursor": "is not valid"})
    return before


def page_of(rows: Sequence, limit: int, shown: Callable[[object], dict]) -> dict:
    """`{data, next_cursor}` of rows read with `limit + 1`: one more than the page says whether another follows."""
    page = rows[:limit]
    return {"data": [shown(row) for row in page],
            "next_cursor": encode_cursor(page[-1].id) if len(rows) > limit else None}
