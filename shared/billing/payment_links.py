"""The link dunning messages carry to update the card: signed and expiring, so it cannot be made from an
account id, and followed it opens a fresh setup page (the gateway's own pages expire within a day).

`<account id>.<expiry, base 36 seconds>.<signature>`: the signature is a keyed digest under CREDITQ_SECRET_KEY
(shared.secrets), so a link survives a key rotation while the old key is listed.
"""

import base64
from datetime import datetime, timedelta

from shared import secrets

LINK_TTL = timedelta(days=30)  # longer than any dunning schedule's gap between two messages
PATH = "/billing/card/"
_SIGNATURE_CHARS = 22  # 128 bits of the digest, base64url


def update_link(public_base_url: str, account_id: str, *, now: datetime) -> str:
    expires = _base36(int((now + LINK_TTL).timestamp()))
    return f"{public_base_url}{PATH}{account_id}.{expires}.{_signature(account_id, expires)}"


def account_of(token: str, *, now: datetime) -> str | None:
    """The account a link was made for, when it is genuine and not expired; else None."""
    parts = token.split(".")
    if len(parts) != 3 or not parts[1].isalnum() or not parts[1].isascii():
        return None
    account_id, expires, signature = parts
    if int(expires, 36) < now.timestamp():
        return None
    genuine = any(signature == _encode(bytes.fromhex(candidate))[:_SIGNATURE_CHARS]
                  for candidate in secrets.digests(_signed(account_id, expires)))
    return account_id if genuine else None


def _signed(account_id: str, expires: str) -> bytes:
    return f"payment-link:{account_id}:{expires}".encode()


def _signature(account_id: str, expires: str) -> str:
    return _encode(bytes.fromhex(secrets.digest(_signed(account_id, expires))))[:_SIGNATURE_CHARS]


def _encode(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _base36(value: int) -> str:
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    out = ""
    while value:
        value, rest = divmod(value, 36)
        out = digits[rest] + out
    return out or "0"
