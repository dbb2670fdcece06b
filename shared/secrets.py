"""Secrets at rest: the columns that hold credentials keep only Fernet tokens under the deployment key.

`EncryptedText` is the type of every such column (Account.twilio_auth_token, DunningIntegration.auth_token,
IdempotencyRecord.body — a stored answer may hold a new account's API key): code reads and writes plain
strings, the database sees only ciphertext. The keys are CREDITQ_SECRET_KEY (shared.config), comma-separated:
the first encrypts and every one decrypts (MultiFernet), so a new key can be put first while the old one
still reads.

A token differs on every write (a random IV), so an encrypted column is never compared in SQL: a secret is
found through its row, "is this still the same credential" is a version column, and what must be matched
without being stored (an idempotent request) is a keyed digest (`digest`, `digest_matches`).

The key ring is built once per process, lazily, from the environment; tests install their own with `use_keys`.
"""

import base64
import hashlib
import hmac
import threading
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from sqlalchemy import Text
from sqlalchemy.types import TypeDecorator

from shared.config import ConfigError, load_settings


class WrongSecretKey(ConfigError):
    """A stored secret that no key of CREDITQ_SECRET_KEY opens: the deployment runs with the wrong keys."""


@dataclass(frozen=True)
class _KeyRing:
    fernets: tuple[Fernet, ...]
    multi: MultiFernet
    digest_keys: tuple[bytes, ...]  # one per Fernet key, derived so a digest never reuses the cipher's key


_ring: _KeyRing | None = None
_lock = threading.Lock()


def use_keys(keys: Sequence[str] | None) -> None:
    """Install the process's keys (the first encrypts), or with None go back to reading the environment."""
    global _ring
    with _lock:
        _ring = None if keys is None else _key_ring(keys)


def _key_ring(keys: Sequence[str]) -> _KeyRing:
    if not keys:
        raise ConfigError("CREDITQ_SECRET_KEY holds no key")
    fernets = tuple(Fernet(key) for key in keys)
    digest_keys = tuple(hmac.new(base64.urlsafe_b64decode(key), b"creditq digest", hashlib.sha256).digest()
                        for key in keys)
    return _KeyRing(fernets, MultiFernet(fernets), digest_keys)


def _current() -> _KeyRing:
    global _ring
    with _lock:
        if _ring is None:
            _ring = _key_ring(load_settings().secret_keys)
        return _ring


def encrypt(plain: str) -> str:
    return _current().multi.encrypt(plain.encode()).decode()


def decrypt(token: str) -> str:
    try:
        return _current().multi.decrypt(token.encode()).decode()
    except InvalidToken:
        raise WrongSecretKey("a stored secret cannot be decrypted with CREDITQ_SECRET_KEY: the key it was "
                             "written under is not in the list") from None


def digest(data: bytes) -> str:
    """HMAC-SHA256 of `data` under the first key: comparable, but worthless to whoever reads the database."""
    return hmac.new(_current().digest_keys[0], data, hashlib.sha256).hexdigest()


def digest_matches(data: bytes, expected: str) -> bool:
    """Whether `expected` is the digest of `data` under any key, so digests survive a rotation."""
    return any(hmac.compare_digest(hmac.new(key, data, hashlib.sha256).hexdigest(), expected)
               for key in _current().digest_keys)


class EncryptedText(TypeDecorator):
    """A text column stored as a Fernet token; None stays NULL. Never put one in a WHERE clause."""

    impl = Text
    cache_ok = True

    def process_bind_param(self, value, dialect):
        return None if value is None else encrypt(value)

    def process_result_value(self, value, dialect):
        return None if value is None else decrypt(value)
