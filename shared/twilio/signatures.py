"""Is a webhook really from Twilio? X-Twilio-Signature checked with the auth token of the account it names.

Twilio signs with the auth token of the (sub)account that owns the message: an account sending with its
own credentials gets callbacks signed with its own token. The AccountSid form field only picks which of
our secrets to try; a forger still needs that secret.
"""

from collections.abc import Mapping

from sqlalchemy import select
from sqlalchemy.orm import Session
from twilio.request_validator import RequestValidator

from shared.models import Account


def signing_tokens(session: Session, account_sid: str | None, *, default_sid: str, default_token: str) -> list[str]:
    """The auth tokens a webhook naming `account_sid` may be signed with; the deployment's is always one."""
    if not account_sid or account_sid == default_sid:
        return [default_token]
    own = session.scalars(
        select(Account.twilio_auth_token).where(Account.twilio_account_sid == account_sid,
                                                Account.twilio_auth_token.is_not(None)).distinct()
    ).all()
    return [*own, default_token]


def signed_by_twilio(url: str, params: Mapping, signature: str | None, tokens: list[str]) -> bool:
    """True when `signature` is Twilio's HMAC of the full public URL and the form, under one of `tokens`."""
    return bool(signature) and any(RequestValidator(token).validate(url, params, signature) for token in tokens)
