"""Opaque, time-ordered identifiers: sortable like the rows they name, so cursors can page by id."""

import hashlib
import os
import time

_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"  # Crockford base32, lower case
_PAIRS = [high + low for high in _ALPHABET for low in _ALPHABET]  # 10 bits -> their two digits
_PAIR_SHIFTS = tuple(range(120, -1, -10))  # 26 digits = 130 bits: 13 pairs, most significant first


CALL_REFERENCE = "call_"  # calls' ids (new_id("call")), the references of the ledger entries of what they cost


def new_id(prefix: str) -> str:
    """prefix_ + 48 bits of milliseconds + 80 random bits, base32: 26 characters after the prefix."""
    return _encode(prefix, (int(time.time() * 1000) << 80) | int.from_bytes(os.urandom(10), "big"))


def keyed_id(prefix: str, key: str) -> str:
    """The id `key` always gives (shaped like new_id's, not time-ordered): for a row a retry must find again,
    such as a campaign created under an Idempotency-Key."""
    return _encode(prefix, int.from_bytes(hashlib.sha256(key.encode()).digest()[:16], "big"))


def _encode(prefix: str, value: int) -> str:
    """`value` (below 2**130) as 26 base32 digits; two at a time, since a campaign makes ids by the hundred
    thousand."""
    return f"{prefix}_{''.join([_PAIRS[(value >> shift) & 1023] for shift in _PAIR_SHIFTS])}"
