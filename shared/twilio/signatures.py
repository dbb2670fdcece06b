"""Is a webhook really from Twilio, about a resource of the account that signed it?

Twilio signs each callback (X-Twilio-Signature) with the auth token of the (sub)account that owns the
resource, and names that account in the form's AccountSid. The AccountSid alone proves nothing (anyone
can type one), and a token we merely store proves nothing either (an account may store any token it
likes): so the caller first finds the resource the callback is about, takes the credentials it was sent
with, requires AccountSid to name them, and only then checks the signature with that one token.

A callback about a resource we do not know yet (a status that beat its message's sid) can only be checked
against the credentials we know for the AccountSid it names: `known_credentials`. The deployment's
AccountSid is only ever checked with the deployment's token, whatever an account or a site stored for it.
"""

from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlparse

from sqlalchemy import Connection, select, union_all
from sqlalchemy.orm import Session
from twilio.request_validator import RequestValidator, add_port, compare, remove_port

from shared.models import Account, DunningIntegration


@dataclass(frozen=True)
class Credentials:
    """A Twilio (sub)account and its auth token."""

    account_sid: str
    auth_token: str


@dataclass(frozen=True)
class SignedForm:
    """A webhook as Twilio posted it: the full public URL it was sent to, its form fields and X-Twilio-Signature."""

    url: str
    params: Mapping[str, str]
    signature: str | None

    @property
    def account_sid(self) -> str:
        return str(self.params.get("AccountSid") or "")

    def signed_by(self, credentials: Credentials | None) -> bool:
        """True when the form names these credentials' account and is Twilio's HMAC under their token."""
        return (credentials is not None and bool(self.signature) and bool(credentials.auth_token)
                and self.account_sid == credentials.account_sid
                and _twilios_hmac(credentials.auth_token, self.url, self.params, self.signature))


def _twilios_hmac(token: str, url: str, params: Mapping[str, str], signature: str) -> bool:
    """RequestValidator.validate's answer: Twilio signs the URL with or without its port (its own back end is not
    consistent), and validate computes both HMACs every time; here the other only when the URL as written fails.
    A URL carrying a JSON body's hash (bodySHA256) goes to validate as it is."""
    validator = RequestValidator(token)
    if "bodySHA256" in url:
        return validator.validate(url, params, signature)
    parsed = urlparse(url)
    as_written = (add_port, remove_port) if parsed.port else (remove_port, add_port)
    return any(compare(validator.compute_signature(variant(parsed), params), signature) for variant in as_written)


def credentials_of(account_sid: str, *, own_sid: str | None, own_token: str | None,
                   deployment: Credentials) -> Credentials | None:
    """The credentials behind `account_sid` for a resource of an account whose own are (own_sid, own_token).

    The deployment's sid means the deployment's token, whatever the account stored; the account's own sid
    means its token; any other sid (credentials the account has replaced since) has no token we know: None.
    """
    if account_sid == deployment.account_sid:
        return deployment
    if account_sid == own_sid and own_token:
        return Credentials(account_sid, own_token)
    return None


def signed_by_deployment(form: SignedForm, deployment: Credentials) -> bool:
    """Whether a verified form came with the deployment's own token (its AccountSid is checked with no other), not
    with one an account holds too (its own subaccount's, a dunning site's)."""
    return form.account_sid == deployment.account_sid


def known_credentials(session: Session | Connection, account_sid: str, *,
                      deployment: Credentials) -> list[Credentials]:
    """Every set of credentials we hold for `account_sid`: the deployment's, or accounts' own and dunning sites'."""
    if not account_sid:
        return []
    if account_sid == deployment.account_sid:
        return [deployment]
    tokens = union_all(
        select(Account.twilio_auth_token.label("token")).where(Account.twilio_account_sid == account_sid,
                                                               Account.twilio_auth_token.is_not(None)),
        select(DunningIntegration.auth_token.label("token")).where(DunningIntegration.account_sid == account_sid),
    ).subquery()
    found = session.scalars(select(tokens.c.token)).all()
    return [Credentials(account_sid, token) for token in dict.fromkeys(found)]  # tokens are compared here, not in SQL
