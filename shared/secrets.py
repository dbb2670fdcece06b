"""Secrets at rest: the columns that hold credentials keep only Fernet tokens under the deployment key.

`EncryptedText` is the type of every such column (Account.twilio_auth_token, DunningIntegration.auth_token,
IdempotencyRecord.body — a stored answer may hold a new account's API key): code reads and writes plain
strings, the database sees only ciphertext. The keys are CREDITQ_SECRET_KEY (shared.config), comma-separated:
the first encrypts and every one decrypts (MultiFernet), so a key is rotated by putting a new one first,
running `creditq secrets rotate` (`rotate` below) and dropping the old one afterwards.

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
from sqlalchemy import MetaData, Table, Text, literal, or_, select, tuple_, type_coerce, update
from sqlalchemy.types import TypeDecorator

from shared.config import ConfigError, load_settings
from shared.db import Database

ROTATE_BATCH = 500  # rows re-encrypted per transaction: short row locks, bounded memory


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


def digests(data: bytes) -> list[str]:
    """The digest of `data` under every key, first key first: what a digest made before a rotation may be."""
    return [hmac.new(key, data, hashlib.sha256).hexdigest() for key in _current().digest_keys]


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


@dataclass(frozen=True)
class RotationSummary:
    re_encrypted: int
    already_current: int
    columns: tuple[str, ...]  # "table.column" of every encrypted column

    def line(self) -> str:
        return (f"secrets rotate: {self.re_encrypted} values re-encrypted under the first key, "
                f"{self.already_current} already were ({', '.join(self.columns)})")


def _encrypted_columns(metadata: MetaData) -> list[tuple[Table, list]]:
    """Every table with EncryptedText columns, with those columns."""
    found = []
    for table in metadata.sorted_tables:
        columns = [column for column in table.columns if isinstance(column.type, EncryptedText)]
        if columns:
            found.append((table, columns))
    return found


def rotate(database: Database, metadata: MetaData, *, batch_size: int = ROTATE_BATCH) -> RotationSummary:
    """Re-encrypt every stored secret under the first key; idempotent (a value already under it is left).

    Each table is walked in primary-key order, a batch per transaction holding its rows' locks, so a write
    racing the rotation either lands first (and is read) or waits. A value no key opens raises WrongSecretKey
    and rolls its batch back; the batches before it stay rotated, which is harmless.
    """
    ring = _current()
    re_encrypted = already_current = 0
    names: list[str] = []
    for table, columns in _encrypted_columns(metadata):
        names += [f"{table.name}.{column.name}" for column in columns]
        primary_key = list(table.primary_key.columns)
        tokens = [type_coerce(column, Text()).label(column.name) for column in columns]  # as stored, not decrypted
        last = None
        while True:
            with database.unit_of_work() as session:
                query = (select(*primary_key, *tokens).where(or_(*(column.is_not(None) for column in columns)))
                         .order_by(*primary_key).limit(batch_size).with_for_update())
                if last is not None:
                    query = query.where(tuple_(*primary_key) > tuple_(*last))
                rows = session.execute(query).all()
                for row in rows:
                    key, stored = row[:len(primary_key)], row[len(primary_key):]
                    fresh, current = _rotated(ring, table, columns, stored)
                    already_current += current
                    if fresh:
                        re_encrypted += len(fresh)
                        session.execute(update(table).where(*(column == value for column, value
                                                               in zip(primary_key, key, strict=True)))
                                        .values(fresh))
            if len(rows) < batch_size:
                break
            last = tuple(rows[-1][:len(primary_key)])
    return RotationSummary(re_encrypted, already_current, tuple(names))


def _rotated(ring: _KeyRing, table: Table, columns: list, stored: Sequence[str | None]) -> tuple[dict, int]:
    """A row's values that need a new token (as SQL literals, which skip EncryptedText), and how many did not."""
    fresh, current = {}, 0
    for column, token in zip(columns, stored, strict=True):
        if token is None:
            continue
        try:
            ring.fernets[0].decrypt(token.encode())
            current += 1
            continue
        except InvalidToken:
            pass
        try:
            fresh[column.name] = literal(ring.multi.rotate(token.encode()).decode(), Text())
        except InvalidToken:
            raise WrongSecretKey(f"{table.name}.{column.name} holds a value that no key of CREDITQ_SECRET_KEY "
                                 "decrypts: put the key it was written under in the list") from None
    return fresh, current
