"""Dunning sites: the Twilio number and credentials each site's dunning texts go out with (a DunningIntegration).

A site belongs to an account: its billing system's site, whose customers its runs chase; its texts go
through the message pipeline (shared.messaging.sites), metered against the account. Its `from` must be a
number of the account, and its credentials are proven with Twilio before they are stored, since callbacks
signed with them are believed. A site with no account is creditq's own, built in, set by the operator: it
texts the owners of accounts creditq itself is chasing, straight through Twilio, charged to nobody.

When Twilio rejects a site's credentials (20003) the site is marked `broken` with the reason: its texts stop
(e-mails go on) until new credentials are saved, which marks it `ok` again. The mark names the credentials
by their version, never by the token (stored encrypted, shared.secrets).
"""

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from shared.db import Database
from shared.errors import NotFound, ValidationFailed
from shared.ids import new_id
from shared.messaging.credentials import prove_credentials
from shared.messaging.phone_numbers import parse_e164
from shared.messaging.sites import reject_site_credentials
from shared.models import DunningIntegration, PhoneNumber
from shared.twilio.errors import CredentialsRejected, OutcomeUnknown, PermanentTwilioError, TransientTwilioError

BUILT_IN_SITE = "default"  # creditq's own dunning of its accounts texts from this site


@dataclass(frozen=True)
class IntegrationView:
    site: str
    account_sid: str
    from_number: str
    help_text: str | None
    status: str
    broken_reason: str | None
    updated_at: datetime


@dataclass(frozen=True)
class SmsOutcome:
    status: str  # recorded on the dunning step
    sid: str | None = None
    error: Exception | None = None  # set when the send should be retried later

    @property
    def retry(self) -> bool:
        return self.error is not None


def check_site_name(site: object) -> str:
    if not isinstance(site, str) or not 0 < len(site) <= 64:
        raise ValidationFailed("site must be a name of 1 to 64 characters", errors={"site": "must be 1-64 characters"})
    return site


def save_integration(database: Database, site: object, *, account_id: str | None, account_sid: object,
                     auth_token: object, from_number: object, help_text: object = None,
                     account_status: Callable[[str, str], str] | None, now: datetime) -> IntegrationView:
    """An account's site: its credentials proven with Twilio first (`account_status`, outside any transaction),
    then stored. The built-in site (account_id None) is the operator's and is stored as given."""
    _check_credentials(account_sid, auth_token)
    if account_id is not None:
        with database.read_only() as session:  # what needs no Twilio is refused before Twilio is asked
            _check_sender(session, account_id, check_site_name(site), parse_e164(from_number, field="from"))
        prove_credentials(account_sid, auth_token, account_status)
    with database.unit_of_work() as session:
        return set_integration(session, site, account_id=account_id, account_sid=account_sid, auth_token=auth_token,
                               from_number=from_number, help_text=help_text, now=now)


def set_integration(session: Session, site: object, *, account_id: str | None = None, account_sid: object,
                    auth_token: object, from_number: object, help_text: object = None,
                    now: datetime) -> IntegrationView:
    """Save (or replace) the site's credentials; new credentials clear a `broken` status."""
    site = check_site_name(site)
    _check_credentials(account_sid, auth_token)
    phone = parse_e164(from_number, field="from")
    if help_text is not None and not (isinstance(help_text, str) and 0 < len(help_text) <= 320):
        raise ValidationFailed("help_text must be 1 to 320 characters", errors={"help_text": "must be 1-320 characters"})
    if account_id is not None:
        _check_sender(session, account_id, site, phone)
    integration = session.scalar(_site_query(account_id, site).with_for_update())
    if integration is None:
        integration = DunningIntegration(id=new_id("site"), account_id=account_id, site=site, credential_version=0)
        session.add(integration)
    integration.credential_version += 1
    integration.account_sid, integration.auth_token, integration.from_number = account_sid, auth_token, phone
    integration.help_text = help_text
    integration.status, integration.broken_reason, integration.updated_at = "ok", None, now
    session.flush()
    return _view(integration)


def get_integration(session: Session, site: str, *, account_id: str | None = None) -> IntegrationView:
    """The account's site (account_id None: creditq's built-in one); another account's is NotFound."""
    return _view(site_of(session, account_id, site))


def site_of(session: Session, account_id: str | None, site: str) -> DunningIntegration:
    integration = session.scalar(_site_query(account_id, site))
    if integration is None:
        raise NotFound(f"No dunning site {site!r}.")
    return integration


def _site_query(account_id: str | None, site: str):
    owner = DunningIntegration.account_id.is_(None) if account_id is None else DunningIntegration.account_id == account_id
    return select(DunningIntegration).where(owner, DunningIntegration.site == site)


def _check_credentials(account_sid: object, auth_token: object) -> None:
    if not (isinstance(account_sid, str) and account_sid.startswith("AC") and len(account_sid) == 34):
        raise ValidationFailed("account_sid must be 'AC' followed by 32 characters",
                               errors={"account_sid": "must be AC + 32 characters"})
    if not (isinstance(auth_token, str) and 0 < len(auth_token) <= 100):
        raise ValidationFailed("auth_token must be a non-empty string", errors={"auth_token": "must be a string"})


def _check_sender(session: Session, account_id: str, site: str, phone: str) -> None:
    """An account's site texts from one of the account's own numbers, used by no other site: a STOP to it then
    names one site."""
    owned = session.scalar(select(PhoneNumber.id).where(PhoneNumber.account_id == account_id,
                                                        PhoneNumber.phone == phone, PhoneNumber.released_at.is_(None)))
    if owned is None:
        raise ValidationFailed(f"{phone} is not a number of this account (POST /v1/accounts/{{id}}/numbers).",
                               errors={"from": "is not a number of this account"})
    taken = session.scalar(select(DunningIntegration.site).where(
        DunningIntegration.from_number == phone, DunningIntegration.account_id.is_not(None),
        ~((DunningIntegration.account_id == account_id) & (DunningIntegration.site == site))))
    if taken is not None:
        raise ValidationFailed(f"{phone} already texts for site {taken!r}: give each site its own number.",
                               errors={"from": "is the number of another site"})


class DunningTexter:
    """Sends one text of creditq's own dunning through its built-in site, straight through Twilio: it is creditq's
    text, so no account is charged for it and no account's lock or suspension stops it.
    `gateway_for(sid, token)` gives a TwilioGateway."""

    def __init__(self, gateway_for: Callable):
        self._gateway_for = gateway_for

    def unavailable_reason(self, session: Session, site: str) -> str | None:
        integration = session.scalar(_site_query(None, site))
        if integration is None:
            return f"skipped: no dunning Twilio credentials for site {site!r}"
        if integration.status != "ok":
            return f"skipped: the site's Twilio integration is broken ({integration.broken_reason})"
        return None

    def send(self, database: Database, site: str, *, to: str, body: str, now: datetime) -> SmsOutcome:
        with database.unit_of_work() as session:
            integration = session.scalar(_site_query(None, site))
            site_id, sid, token = integration.id, integration.account_sid, integration.auth_token
            from_number, version = integration.from_number, integration.credential_version
        try:
            sent = self._gateway_for(sid, token).send(to=to, from_=from_number, body=body)
        except CredentialsRejected:
            with database.unit_of_work() as session:  # only the version that failed: a save meanwhile stays ok
                reject_site_credentials(session, site_id, version, now=now)
            return SmsOutcome("failed: Twilio rejected the site's credentials (20003)")
        except OutcomeUnknown:
            return SmsOutcome("unknown: Twilio did not answer; not sent again")
        except TransientTwilioError as error:
            return SmsOutcome("retrying", error=error)
        except PermanentTwilioError as error:
            return SmsOutcome(f"failed: Twilio error {error.code}: {error.message}"[:200])
        return SmsOutcome(f"sent to {to}", sid=sent.sid)


def _view(integration: DunningIntegration) -> IntegrationView:
    return IntegrationView(integration.site, integration.account_sid, integration.from_number, integration.help_text,
                           integration.status, integration.broken_reason, integration.updated_at)
