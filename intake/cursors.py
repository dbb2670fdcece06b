"""Opaque page cursors: `next_cursor` names the last row of a page; the next page starts before it.

Every list pages the same way: rows newest first, `limit + 1` read to know whether another page follows
(`page_of`), the next page's rows below the last one shown: `id < before` (messages, kept in `created_at`
order: below its (created_at, id), shared.messaging.search). Ids are bigints or the strings of shared.ids
(`text_ids=True`). Either way a page is a range of keys below the last one shown, so rows inserted while a
client pages never shift the pages still to come: each row that was there is listed once.

A cursor carries an HMAC of its list (the path, the key that asked, the filters of the query) and its id,
under a key derived from the first secret key: a cursor made by hand, or one another list returned (another
tenant's, the same list with other filters), is a 422 rather than a page that silently means something else.
"""

import base64
import binascii
import hashlib
import hmac
import re
from collections.abc import Callable, Sequence

from aiohttp import web

from .appkeys import PRINCIPAL, SETTINGS
from .errors import Problem
from .fields import MAX_BIGINT, whole_number

_TEXT_ID = re.compile(r"[a-z]{1,8}_[0-9a-z]{1,32}")  # shared.ids: prefix_ and base32
_MAC_BYTES = 16
_PAGE_NAMES = ("cursor", "limit")  # the query's names that page a list rather than choose it


def encode_cursor(request: web.Request, last_id: int | str) -> str:
    text = f"before:{last_id}"
    return f"{_b64(text.encode())}.{_b64(_mac(request, text))}"


def decode_cursor(request: web.Request, *, text_ids: bool = False) -> int | str | None:
    """The id to continue before, out of the request's `cursor`; a cursor this list did not return (or one past
    64 bits) is a 422."""
    cursor = request.query.get("cursor")
    if cursor is None:
        return None
    encoded_text, _, encoded_mac = cursor.partition(".")
    try:
        text = _unb64(encoded_text).decode("ascii")
        signed = hmac.compare_digest(_unb64(encoded_mac), _mac(request, text))
    except (ValueError, binascii.Error, UnicodeDecodeError):
        text, signed = "", False
    prefix, _, last_id = text.partition(":")
    if not signed or prefix != "before":
        before = None
    elif text_ids:
        before = last_id if _TEXT_ID.fullmatch(last_id) else None
    else:
        before = whole_number(last_id, maximum=MAX_BIGINT)
    if before is None:
        raise Problem(422, "Validation failed", "cursor is not one this list returned.",
                      errors={"cursor": "is not valid"})
    return before


def page_of(request: web.Request, rows: Sequence, limit: int, shown: Callable[[object], dict]) -> dict:
    """`{data, next_cursor}` of rows read with `limit + 1`: one more than the page says whether another follows."""
    page = rows[:limit]
    return {"data": [shown(row) for row in page],
            "next_cursor": encode_cursor(request, page[-1].id) if len(rows) > limit else None}


def _mac(request: web.Request, text: str) -> bytes:
    """Bound to the list: its path (its account, campaign or endpoint too), the key that asked (GET /v1/messages
    names no account) and the query's filters (not its page size): a cursor is good on its own list only."""
    key = hmac.new(request.app[SETTINGS].secret_keys[0].encode(), b"creditq list cursor", hashlib.sha256).digest()
    principal = request.get(PRINCIPAL)
    filters = sorted((name, value) for name, value in request.query.items() if name not in _PAGE_NAMES)
    listed = "\n".join([request.path, principal.name if principal is not None else "",
                        *(f"{name}={value}" for name, value in filters), text])
    return hmac.new(key, listed.encode(), hashlib.sha256).digest()[:_MAC_BYTES]


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
