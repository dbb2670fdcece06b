"""A simulated Call resource, its planned life and its Twilio JSON representation.

What happens to a call is decided once, at creation, from the knobs (outcome, `AnsweredBy`, how long the
callee talks), so its statuses, its resource and its callbacks tell one story. Durations are simulated
seconds; the clock that plays them is compressed by ``call_minute_ms``.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from email.utils import format_datetime
from typing import Any

from .config import SimulatorConfig
from .message import API_VERSION, PRICE_QUANTUM

FINAL_CALL_STATUSES = frozenset({"completed", "busy", "no-answer", "failed", "canceled"})
_RANK = {"queued": 0, "initiated": 1, "ringing": 2, "in-progress": 3, **dict.fromkeys(FINAL_CALL_STATUSES, 4)}


def call_status_rank(status: str) -> int:
    return _RANK[status]


@dataclass(frozen=True, slots=True)
class CallPlan:
    outcome: str
    """completed, busy, no-answer or failed."""
    talk_seconds: int
    """How long the call lasts once answered (before any TimeLimit)."""
    answered_by: str | None
    """What machine detection says, when it was asked for and the call is answered."""


def plan_call(config: SimulatorConfig, rng: random.Random, *, machine_detection: bool) -> CallPlan:
    outcomes = list(config.call_outcomes)
    outcome = rng.choices(outcomes, weights=[config.call_outcomes[o] for o in outcomes])[0]
    talk = rng.randint(config.call_min_seconds, config.call_max_seconds)
    answered_by = None
    if machine_detection and outcome == "completed":
        kinds = list(config.answered_by)
        answered_by = rng.choices(kinds, weights=[config.answered_by[k] for k in kinds])[0]
    return CallPlan(outcome, talk, answered_by)


@dataclass(slots=True)
class Call:
    sid: str
    account_sid: str
    to: str
    from_: str
    direction: str
    """outbound-api, or inbound (a call to one of the account's numbers), or outbound-dial (a forwarded leg)."""
    plan: CallPlan
    twiml: str | None
    status_callback: str | None
    callback_events: frozenset[str]
    time_limit: int | None
    price_per_minute: Decimal
    parent_call_sid: str | None = None
    status: str = "queued"
    answered_by: str | None = None
    duration: int | None = None
    date_created: datetime = field(default_factory=lambda: datetime.now(UTC))
    date_updated: datetime | None = None
    start_time: datetime | None = None
    end_time: datetime | None = None
    recordings: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.date_updated = self.date_created

    @property
    def talk_seconds(self) -> int:
        """What the call lasts once answered: the plan, cut at the TimeLimit Twilio enforces."""
        if self.time_limit is None:
            return self.plan.talk_seconds
        return min(self.plan.talk_seconds, self.time_limit)

    def advance(self, status: str) -> bool:
        """Move forward to ``status``; False (and nothing changes) for a status it is already past."""
        if call_status_rank(status) <= call_status_rank(self.status):
            return False
        now = datetime.now(UTC)
        self.status = status
        self.date_updated = now
        if status == "in-progress":
            self.start_time = now
            self.answered_by = self.plan.answered_by
        if status in FINAL_CALL_STATUSES:
            self.duration = self.talk_seconds if status == "completed" else 0
            self.end_time = now if status == "completed" else None
        return True

    @property
    def minutes(self) -> int:
        return -(-(self.duration or 0) // 60)

    @property
    def price(self) -> str | None:
        if self.status not in FINAL_CALL_STATUSES:
            return None
        return str(-(self.price_per_minute * self.minutes).quantize(PRICE_QUANTUM))

    @property
    def uri(self) -> str:
        return f"/{API_VERSION}/Accounts/{self.account_sid}/Calls/{self.sid}.json"

    def as_resource(self) -> dict[str, Any]:
        """The JSON Twilio returns for create, fetch and list."""
        base = self.uri[: -len(".json")]
        return {
            "account_sid": self.account_sid,
            "answered_by": self.answered_by,
            "api_version": API_VERSION,
            "caller_name": None,
            "date_created": format_datetime(self.date_created),
            "date_updated": format_datetime(self.date_updated),
            "direction": self.direction,
            "duration": None if self.duration is None else str(self.duration),
            "end_time": format_datetime(self.end_time) if self.end_time else None,
            "forwarded_from": None,
            "from": self.from_,
            "from_formatted": self.from_,
            "group_sid": None,
            "parent_call_sid": self.parent_call_sid,
            "phone_number_sid": None,
            "price": self.price,
            "price_unit": "USD",
            "queue_time": "0",
            "sid": self.sid,
            "start_time": format_datetime(self.start_time) if self.start_time else None,
            "status": self.status,
            "subresource_uris": {
                name: f"{base}/{name.replace('_', ' ').title().replace(' ', '')}.json"
                for name in ("notifications", "recordings", "payments", "events", "siprec", "streams",
                             "transcriptions", "user_defined_message_subscriptions", "user_defined_messages")
            },
            "to": self.to,
            "to_formatted": self.to,
            "trunk_sid": None,
            "uri": self.uri,
        }
