"""Standard Webhooks signatures (https://www.standardwebhooks.com), made with the `standardwebhooks` package.

Each request carries `webhook-id` (the event's id: the same on every attempt, for de-duplication),
`webhook-timestamp` (seconds, this attempt) and `webhook-signature` (`v1,<base64 HMAC-SHA256>` of
`id.timestamp.body` under the endpoint's `whsec_` secret). Receivers verify with the same package:
`Webhook(secret).verify(body, headers)`.
"""

import base64
import secrets
from datetime import datetime

from standardwebhooks.webhooks import Webhook

SECRET_PREFIX = "whsec_"


def new_secret() -> str:
    """24 random bytes, base64, with Standard Webhooks' prefix."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(24)).decode()


def headers(secret: str, event_id: str, body: str, *, at: datetime) -> dict[str, str]:
    at = at.replace(microsecond=0)
    return {"webhook-id": event_id, "webhook-timestamp": str(int(at.timestamp())),
            "webhook-signature": Webhook(secret).sign(event_id, at, body)}
