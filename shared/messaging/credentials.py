"""An account's own Twilio credentials. Replacing them lifts a 20003 block and releases its parked messages."""

from datetime import datetime

from shared.errors import ValidationFailed
from shared.ledger import book
from shared.messaging.parking import unpark_account
from shared.models import Account


def set_twilio_credentials(session, account_id: str, account_sid: str | None, auth_token: str | None, *,
                           now: datetime) -> list[str]:
    """Store the credentials (both None: use the deployment's); returns the released message ids to enqueue."""
    if (account_sid is None) != (auth_token is None):
        raise ValidationFailed("Give both account_sid and auth_token, or neither.",
                               errors={"account_sid" if account_sid is None else "auth_token": "is required"})
    if account_sid is not None and not (isinstance(account_sid, str) and account_sid.startswith("AC")
                                        and len(account_sid) == 34):
        raise ValidationFailed("account_sid must be 'AC' followed by 32 characters.",
                               errors={"account_sid": "must be AC + 32 characters"})
    if auth_token is not None and not (isinstance(auth_token, str) and 0 < len(auth_token) <= 100):
        raise ValidationFailed("auth_token must be a non-empty string.", errors={"auth_token": "must be a string"})
    book.lock_account(session, account_id)
    account = session.get(Account, account_id)
    account.twilio_account_sid = account_sid
    account.twilio_auth_token = auth_token
    account.sending_blocked_reason = None
    return unpark_account(session, account_id, now=now)
