"""An account's webhook endpoints: where its events go, which types, and the secret that signs them.

The secret is made here, returned once (on create and on rotate) and stored encrypted (EncryptedText under
CREDITQ_SECRET_KEY); no read shows it again and nothing logs it. An endpoint of another account, or a deleted
one, is NotFound: an account key sees only its own. The URL is checked by the caller (addresses.check_url)
before the transaction, since that resolves its host.
"""

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from shared.errors import NotFound, ValidationFailed
from shared.events.signing import new_secret
from shared.events.types import ALL, EVENT_TYPES
from shared.ids import new_id
from shared.models import WebhookEndpoint, WebhookSubscription

MAX_ENDPOINTS = 20  # per account


def event_types(raw: Sequence[str]) -> list[str]:
    """The types an endpoint asks for, known ones only; ["*"] (alone or among others) takes all."""
    unknown = sorted({item for item in raw if item not in EVENT_TYPES and item != ALL})
    if unknown:
        raise ValidationFailed(f"unknown event types: {', '.join(unknown)}",
                               errors={"events": f"unknown: {', '.join(unknown)}; known: {', '.join(EVENT_TYPES)}"})
    return [ALL] if ALL in raw else sorted(set(raw))


def create_endpoint(session: Session, account_id: str, *, url: str, events: Sequence[str], description: str | None,
                    now: datetime) -> tuple[WebhookEndpoint, str]:
    """The new endpoint and its secret (shown to the caller once)."""
    count = len(session.scalars(select(WebhookEndpoint.id).where(WebhookEndpoint.account_id == account_id,
                                                                  WebhookEndpoint.deleted_at.is_(None))).all())
    if count >= MAX_ENDPOINTS:
        raise ValidationFailed(f"an account has at most {MAX_ENDPOINTS} webhook endpoints",
                               errors={"url": f"the account already has {MAX_ENDPOINTS} endpoints"})
    secret = new_secret()
    endpoint = WebhookEndpoint(id=new_id("we"), account_id=account_id, url=url, description=description,
                               secret=secret, enabled=True, created_at=now, updated_at=now)
    session.add(endpoint)
    session.flush()
    _subscribe(session, endpoint, events)
    return endpoint, secret


def get_endpoint(session: Session, account_id: str, endpoint_id: str, *, for_update: bool = False) -> WebhookEndpoint:
    endpoint = session.get(WebhookEndpoint, endpoint_id, with_for_update=for_update)
    if endpoint is None or endpoint.account_id != account_id or endpoint.deleted_at is not None:
        raise NotFound(f"No webhook endpoint {endpoint_id} on account {account_id}.")
    return endpoint


def list_endpoints(session: Session, account_id: str) -> list[WebhookEndpoint]:
    return list(session.scalars(select(WebhookEndpoint).where(WebhookEndpoint.account_id == account_id,
                                                               WebhookEndpoint.deleted_at.is_(None))
                                .order_by(WebhookEndpoint.id)))


def subscribed_types(session: Session, endpoint_id: str) -> list[str]:
    return sorted(session.scalars(select(WebhookSubscription.event_type)
                                  .where(WebhookSubscription.endpoint_id == endpoint_id)))


def update_endpoint(session: Session, account_id: str, endpoint_id: str, *, url: str | None = None,
                    events: Sequence[str] | None = None, description: str | None = None,
                    enabled: bool | None = None, now: datetime) -> WebhookEndpoint:
    """Change what is given. Enabling clears `disabled_reason`: deliveries start again with the next event
    (replay the ones it missed)."""
    endpoint = get_endpoint(session, account_id, endpoint_id, for_update=True)
    if url is not None:
        endpoint.url = url
    if description is not None:
        endpoint.description = description
    if enabled is not None:
        endpoint.enabled = enabled
        endpoint.disabled_reason = None
    if events is not None:
        session.execute(delete(WebhookSubscription).where(WebhookSubscription.endpoint_id == endpoint.id))
        _subscribe(session, endpoint, events)
    endpoint.updated_at = now
    return endpoint


def rotate_secret(session: Session, account_id: str, endpoint_id: str, *, now: datetime) -> tuple[WebhookEndpoint, str]:
    """A new secret, at once: every delivery from now on is signed with it (retries of earlier events too)."""
    endpoint = get_endpoint(session, account_id, endpoint_id, for_update=True)
    endpoint.secret = secret = new_secret()
    endpoint.updated_at = now
    return endpoint, secret


def delete_endpoint(session: Session, account_id: str, endpoint_id: str, *, now: datetime) -> None:
    """Gone for the API and for new events; its pending deliveries end failed when next tried."""
    endpoint = get_endpoint(session, account_id, endpoint_id, for_update=True)
    session.execute(delete(WebhookSubscription).where(WebhookSubscription.endpoint_id == endpoint.id))
    endpoint.enabled = False
    endpoint.deleted_at = endpoint.updated_at = now


def _subscribe(session: Session, endpoint: WebhookEndpoint, events: Sequence[str]) -> None:
    session.add_all([WebhookSubscription(endpoint_id=endpoint.id, account_id=endpoint.account_id, event_type=event)
                     for event in events])
    session.flush()
