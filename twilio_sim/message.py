"""A simulated Message resource and its Twilio JSON representation."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from email.utils import format_datetime
from typing import Any

from .delivery import FINAL_STATUSES, DeliveryPlan

API_VERSION = "2010-04-01"
PRICE_QUANTUM = Decimal("0.00001")
_STATUS_RANK = {"accepted": 0, "queued": 0, "sent": 1, **{status: 2 for status in FINAL_STATUSES}}
_BILLED_STATUSES = frozenset({"sent", "delivered", "undelivered"})


def new_sid(prefix: str) -> str:
    """Twilio sid: two-letter prefix + 32 hex digits."""
    return prefix + os.urandom(16).hex()


@dataclass(slots=True)
class Message:
    sid: str
    account_sid: str
    to: str
    from_: str | None
    body: str
    messaging_service_sid: str | None
    num_media: int
    num_segments: int
    cost: Decimal
    """What Twilio will charge once the message is sent; shown as a negative ``price``."""
    plan: DeliveryPlan
    status_callback: str | None
    status: str = "queued"
    date_created: datetime = field(default_factory=lambda: datetime.now(UTC))
    date_updated: datetime | None = None
    date_sent: datetime | None = None
    price: str | None = None
    error_code: int | None = None
    error_message: str | None = None

    def __post_init__(self) -> None:
        self.date_updated = self.date_created

    def advance(self, status: str) -> None:
        """Move forward to ``status``; a late (out-of-order) status never moves it back."""
        if _STATUS_RANK[status] <= _STATUS_RANK[self.status]:
            return
        now = datetime.now(UTC)
        self.status = status
        self.date_updated = now
        if status in _BILLED_STATUSES:
            self.date_sent = self.date_sent or now
            self.price = str(-self.cost.quantize(PRICE_QUANTUM))
        if status in ("undelivered", "failed"):
            self.error_code = self.plan.error_code
            self.error_message = self.plan.error_message

    @property
    def uri(self) -> str:
        return f"/{API_VERSION}/Accounts/{self.account_sid}/Messages/{self.sid}.json"

    def as_resource(self) -> dict[str, Any]:
        """The JSON Twilio returns for create, fetch and list."""
        base = self.uri[: -len(".json")]
        return {
            "account_sid": self.account_sid,
            "api_version": API_VERSION,
            "body": self.body,
            "date_created": format_datetime(self.date_created),
            "date_sent": format_datetime(self.date_sent) if self.date_sent else None,
            "date_updated": format_datetime(self.date_updated),
            "direction": "outbound-api",
            "error_code": self.error_code,
            "error_message": self.error_message,
            "from": self.from_,
            "messaging_service_sid": self.messaging_service_sid,
            "num_media": str(self.num_media),
            "num_segments": str(self.num_segments),
            "price": self.price,
            "price_unit": "USD",
            "sid": self.sid,
            "status": self.status,
            "subresource_uris": {
                "media": f"{base}/Media.json",
                "feedback": f"{base}/Feedback.json",
            },
            "to": self.to,
            "uri": self.uri,
        }
