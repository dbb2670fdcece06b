"""Account API keys: shown once at creation, stored only as a SHA-256 digest."""

import hashlib
import secrets

from sqlalchemy import select
from sqlalchemy.orm import Session

from shared.models import ApiKey

KEY_PREFIX = "cq_live_"


def generate_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def issue_key(session: Session, account_id: str) -> str:
    """Create and store a new key for the account; the plain key is returned only here."""
    key = generate_key()
    session.add(ApiKey(account_id=account_id, key_hash=hash_key(key)))
    return key


def account_for_key(session: Session, key: str) -> str | None:
    return session.scalar(
        select(ApiKey.account_id).where(ApiKey.key_hash == hash_key(key), ApiKey.revoked_at.is_(None))
    )
