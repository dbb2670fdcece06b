"""API keys: shown once at creation, stored only as a SHA-256 digest, listed by name and prefix, revoked by id.

Every key has a scope, from the widest down (SCOPES): the operator's key (CREDITQ_ADMIN_KEY, from the
environment, never stored), account keys (acting as the account's owner) and user keys (acting as one
user of the account, with that user's role; its sends are charged to that user). A key mints only keys
of its own scope or narrower, and which users' keys it may touch is the role policy's (intake.policy).
An account may hold several live keys at once: a client swaps to a new key, then revokes the old one,
without downtime. Revoking the last live key is allowed; the operator can mint another. A deleted
user's keys are revoked with it, and a key whose user is gone is never live.
"""

import hashlib
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from shared.errors import NotFound
from shared.models import Account, ApiKey, User

KEY_PREFIX = "cq_live_"
# What a list shows: the fixed prefix and 6 of the 43 random characters (36 of 256 bits), enough to tell
# keys apart, far too few to use one.
SHOWN_PREFIX_LENGTH = len(KEY_PREFIX) + 6
OPERATOR = "operator"
ACCOUNT = "account"
USER = "user"
SCOPES = (OPERATOR, ACCOUNT, USER)  # widest first
STORED_SCOPES = (ACCOUNT, USER)  # the operator's key lives in the environment only
INITIAL_KEY_NAME = "initial"  # the key an account is created with
# last_used_at is written at most this often per key, so using a key is not a write per request.
LAST_USED_PRECISION = timedelta(minutes=1)


@dataclass(frozen=True)
class LiveKey:
    """What authenticating with a key grants."""

    id: int
    account_id: str
    scope: str
    user_id: str | None = None  # a user key's user
    role: str | None = None  # that user's role (owner, admin, user); None for an account key
    use_to_note: bool = False  # its last use is older than LAST_USED_PRECISION


def generate_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def may_mint(minter_scope: str, scope: str) -> bool:
    """A key mints only keys of its own scope or narrower."""
    return SCOPES.index(scope) >= SCOPES.index(minter_scope)


def issue_key(session: Session, account_id: str, *, name: str = INITIAL_KEY_NAME, user_id: str | None = None) -> str:
    """Create and store a new live key for the account (an account key, or `user_id`'s user key: the caller checked
    the user is the account's); the plain key is returned only here."""
    key = generate_key()
    session.add(ApiKey(account_id=account_id, key_hash=hash_key(key), name=name, prefix=key[:SHOWN_PREFIX_LENGTH],
                       scope=ACCOUNT if user_id is None else USER, user_id=user_id))
    session.flush()
    return key


def find_key(session: Session, key: str) -> ApiKey | None:
    """The stored row of a plain key, live or revoked."""
    return session.scalar(select(ApiKey).where(ApiKey.key_hash == hash_key(key)))


def find_live_key(session: Session, key: str, *, now: datetime) -> LiveKey | None:
    """The live key behind a bearer token, or None, and whether its last use is due to be noted (`note_use`,
    at most once per LAST_USED_PRECISION). Reads only, so a lookup may run in a read-only transaction."""
    return find_live_digest(session, hash_key(key), now=now)


def find_live_digest(session: Session, digest: str, *, now: datetime) -> LiveKey | None:
    """find_live_key by the key's digest: what a console session keeps instead of the key itself."""
    row = session.execute(
        select(ApiKey.id, ApiKey.account_id, ApiKey.scope, ApiKey.user_id, ApiKey.last_used_at, User.role,
               User.deleted_at)
        .outerjoin(User, User.id == ApiKey.user_id)
        .where(ApiKey.key_hash == digest, ApiKey.revoked_at.is_(None))
    ).one_or_none()
    if row is None or (row.user_id is not None and (row.role is None or row.deleted_at is not None)):
        return None
    due = row.last_used_at is None or _utc(row.last_used_at) <= now - LAST_USED_PRECISION
    return LiveKey(id=row.id, account_id=row.account_id, scope=row.scope, user_id=row.user_id, role=row.role,
                   use_to_note=due)


def note_use(session: Session, key_id: int, *, now: datetime) -> None:
    # Conditional, so web processes refreshing the same key in the same minute write it once.
    cutoff = now - LAST_USED_PRECISION
    session.execute(update(ApiKey).where(ApiKey.id == key_id, or_(ApiKey.last_used_at.is_(None),
                                                                 ApiKey.last_used_at <= cutoff))
                    .values(last_used_at=now))


def list_keys(session: Session, account_id: str) -> list[ApiKey]:
    """The account's keys, revoked ones included, newest first."""
    if session.get(Account, account_id) is None:
        raise NotFound(f"No account {account_id}.")
    return list(session.scalars(select(ApiKey).where(ApiKey.account_id == account_id).order_by(ApiKey.id.desc())))


def revoke_key(session: Session, account_id: str, key_id: int, *, now: datetime) -> ApiKey:
    """Revoke one of the account's keys; revoking a revoked key changes nothing."""
    key = session.get(ApiKey, key_id)
    if key is None or key.account_id != account_id:
        raise NotFound(f"No API key {key_id} on account {account_id}.")
    if key.revoked_at is None:
        key.revoked_at = now
    return key


def revoke_account_keys(session: Session, account_id: str, *, now: datetime, user_id: str | None = None) -> list[int]:
    """Revoke every live key of the account (it was canceled), or only `user_id`'s (the user was deleted); returns
    their ids, for caches to forget."""
    live = select(ApiKey.id).where(ApiKey.account_id == account_id, ApiKey.revoked_at.is_(None))
    ids = list(session.scalars(live if user_id is None else live.where(ApiKey.user_id == user_id)))
    if ids:
        session.execute(update(ApiKey).where(ApiKey.id.in_(ids)).values(revoked_at=now)
                        .execution_options(synchronize_session=False))
    return ids


def _utc(value: datetime) -> datetime:
    """SQLite hands back naive datetimes; every time creditq stores is UTC."""
    return value if value.tzinfo else value.replace(tzinfo=UTC)
