"""Dunning texts go out through each site's own Twilio credentials (a DunningIntegration).

When Twilio rejects them (20003) the integration is marked `broken` with the reason: dunning stops
texting for that site (emails go on) until new credentials are saved, which marks it `ok` again. The
mark names the credentials by their version, never by the token (stored encrypted, shared.secrets).
"""

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import update
from sqlalchemy.orm import Session

from shared.db import Database
from shared.errors import NotFound, ValidationFailed
from shared.messaging.phone_numbers import parse_e164
from shared.models import DunningIntegration
from shared.twilio.errors import CredentialsRejected, OutcomeUnknown, PermanentTwilioError, TransientTwilioError

BROKEN_REASON = "Twilio rejected these credentials (20003): save new credentials to resume dunning texts"


@dataclass(frozen=True)
class IntegrationView:
    site: str
    account_sid: str
    from_number: str
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


def set_integration(session: Session, site: str, *, account_sid: object, auth_token: object, from_number: object,
                    now: datetime) -> IntegrationView:
    """Save (or replace) the site's credentials; new credentials clear a `broken` status."""
    if not (isinstance(account_sid, str) and account_sid.startswith("AC") and len(account_sid) == 34):
        raise ValidationFailed("account_sid must be 'AC' followed by 32 characters",
                               errors={"account_sid": "must be AC + 32 characters"})
    if not (isinstance(auth_token, str) and 0 < len(auth_token) <= 100):
        raise ValidationFailed("auth_token must be a non-empty string", errors={"auth_token": "must be a string"})
    phone = parse_e164(from_number, field="from")
    integration = session.get(DunningIntegration, site, with_for_update=True)
    if integration is None:
        integration = DunningIntegration(site=site, credential_version=0)
        session.add(integration)
    integration.credential_version += 1
    integration.account_sid, integration.auth_token, integration.from_number = account_sid, auth_token, phone
    integration.status, integration.broken_reason, integration.updated_at = "ok", None, now
    session.flush()
    return _view(integration)


def get_integration(session: Session, site: str) -> IntegrationView:
    integration = session.get(DunningIntegration, site)
    if integration is None:
        raise NotFound(f"No dunning Twilio credentials for site {site!r}.")
    return _view(integration)


class DunningTexter:
    """Sends one dunning text through the site's integration. `gateway_for(sid, token)` gives a TwilioGateway."""

    def __init__(self, gateway_for: Callable):
        self._gateway_for = gateway_for

    def unavailable_reason(self, session: Session, site: str) -> str | None:
        integration = session.get(DunningIntegration, site)
        if integration is None:
            return f"skipped: no dunning Twilio credentials for site {site!r}"
        if integration.status != "ok":
            return f"skipped: the site's Twilio integration is broken ({integration.broken_reason})"
        return None

    def send(self, database: Database, site: str, *, to: str, body: str, now: datetime) -> SmsOutcome:
        with database.unit_of_work() as session:
            integration = session.get(DunningIntegration, site)
            sid, token, from_number = integration.account_sid, integration.auth_token, integration.from_number
            version = integration.credential_version
        try:
            sent = self._gateway_for(sid, token).send(to=to, from_=from_number, body=body)
        except CredentialsRejected:
            self._mark_broken(database, site, version, now)
            return SmsOutcome("failed: Twilio rejected the site's credentials (20003)")
        except OutcomeUnknown:
            return SmsOutcome("unknown: Twilio did not answer; not sent again")
        except TransientTwilioError as error:
            return SmsOutcome("retrying", error=error)
        except PermanentTwilioError as error:
            return SmsOutcome(f"failed: Twilio error {error.code}: {error.message}"[:200])
        return SmsOutcome(f"sent to {to}", sid=sent.sid)

    @staticmethod
    def _mark_broken(database: Database, site: str, version: int, now: datetime) -> None:
        """Only the credentials that failed: a save that landed meanwhile (even of the same token) stays `ok`."""
        with database.unit_of_work() as session:
            session.execute(update(DunningIntegration).where(DunningIntegration.site == site,
                                                             DunningIntegration.credential_version == version)
                            .values(status="broken", broken_reason=BROKEN_REASON, updated_at=now))


def _view(integration: DunningIntegration) -> IntegrationView:
    return IntegrationView(integration.site, integration.account_sid, integration.from_number, integration.status,
                           integration.broken_reason, integration.updated_at)
