"""An account's own Twilio credentials. Replacing them lifts a 20003 block and releases its parked messages.

Credentials are proven before they are stored: Twilio is asked once for the account they name, which
it answers only to that account's own auth token. So an account cannot store a made-up AccountSid, or
another's AccountSid with a token of its choosing, and have callbacks signed with that token believed.
"""

from collections.abc import Callable
from datetime import datetime

from shared.db import Database
from shared.errors import ValidationFailed
from shared.ledger import book
from shared.messaging.parking import unpark_account
from shared.models import Account
from shared.twilio.errors import CredentialsRejected, PermanentTwilioError


def replace_twilio_credentials(database: Database, account_id: str, account_sid: object, auth_token: object, *,
                               account_status: Callable[[str, str], str], now: datetime) -> list[str]:
    """Prove the credentials with Twilio (outside any transaction), then store them; returns the released ids.

    `account_status(sid, token)` is Twilio's status of that account (shared.twilio.gateway.account_status).
    Refused with ValidationFailed: a malformed pair, credentials Twilio does not accept, an account that is
    not active. TransientTwilioError when Twilio could not answer: nothing is stored.
    """
    _check_shape(account_sid, auth_token)
    if account_sid is not None:
        prove_credentials(account_sid, auth_token, account_status)
    with database.unit_of_work() as session:
        return set_twilio_credentials(session, account_id, account_sid, auth_token, now=now)


def set_twilio_credentials(session, account_id: str, account_sid: str | None, auth_token: str | None, *,
                           now: datetime) -> list[str]:
    """Store the credentials (both None: use the deployment's); returns the released message ids to enqueue."""
    _check_shape(account_sid, auth_token)
    book.lock_account(session, account_id)
    account = session.get(Account, account_id)
    account.twilio_account_sid = account_sid
    account.twilio_auth_token = auth_token
    account.sending_blocked_reason = None
    return unpark_account(session, account_id, now=now)


def _check_shape(account_sid: object, auth_token: object) -> None:
    if (account_sid is None) != (auth_token is None):
        raise ValidationFailed("Give both account_sid and auth_token, or neither.",
                               errors={"account_sid" if account_sid is None else "auth_token": "is required"})
    if account_sid is not None and not (isinstance(account_sid, str) and account_sid.startswith("AC")
                                        and len(account_sid) == 34):
        raise ValidationFailed("account_sid must be 'AC' followed by 32 characters.",
                               errors={"account_sid": "must be AC + 32 characters"})
    if auth_token is not None and not (isinstance(auth_token, str) and 0 < len(auth_token) <= 100):
        raise ValidationFailed("auth_token must be a non-empty string.", errors={"auth_token": "must be a string"})


def prove_credentials(account_sid: str, auth_token: str, account_status: Callable[[str, str], str]) -> None:
    """ValidationFailed unless Twilio opens an active account to these credentials (and only then are they believed
    for callbacks); called outside any transaction."""
    try:
        status = account_status(account_sid, auth_token)
    except CredentialsRejected:
        raise ValidationFailed(f"Twilio does not accept this auth_token for account {account_sid} (or knows no "
                               "such account).", errors={"account_sid": "not accepted by Twilio with this auth_token"}
                               ) from None
    except PermanentTwilioError as error:
        raise ValidationFailed(f"Twilio refused to show account {account_sid}: {error.message}",
                               errors={"account_sid": "not accepted by Twilio"}) from None
    if status != "active":
        raise ValidationFailed(f"Twilio account {account_sid} is {status}, not active.",
                               errors={"account_sid": f"is {status} at Twilio"})


def credentials_keeping(record_account_sid: str | None, account: Account) -> tuple[str | None, str | None]:
    """The credentials of the Twilio account that keeps a record (a message, a call) made with `record_account_sid`,
    as `gateway_for` takes them: the account's own unless the record names another (made with the deployment's
    before the account brought its own: (None, None))."""
    if record_account_sid in (None, account.twilio_account_sid):
        return account.twilio_account_sid, account.twilio_auth_token
    return None, None
