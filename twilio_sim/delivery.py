"""What will happen to a message after Twilio accepts it: its statuses and final error, if any.

Decided once, at creation, from the configured outcome mix, so the message's statuses and its
callbacks tell the same story.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from .config import SimulatorConfig

UNDELIVERED_ERRORS: dict[int, str] = {
    30003: "Unreachable destination handset",
    30004: "Message blocked",
    30005: "Unknown destination handset",
    30006: "Landline or unreachable carrier",
    30007: "Carrier violation",
    30008: "Unknown error",
}
FAILED_ERRORS: dict[int, str] = {
    30001: "Queue overflow",
    30002: "Account suspended",
}
FINAL_STATUSES = frozenset({"delivered", "undelivered", "failed"})


@dataclass(frozen=True, slots=True)
class DeliveryPlan:
    statuses: tuple[str, ...]
    """The statuses the message moves through after ``queued``, in order."""
    error_code: int | None = None
    error_message: str | None = None

    @property
    def final_status(self) -> str:
        return self.statuses[-1]


def plan_delivery(config: SimulatorConfig, rng: random.Random) -> DeliveryPlan:
    outcomes = list(config.outcomes)
    outcome = rng.choices(outcomes, weights=[config.outcomes[o] for o in outcomes])[0]
    if outcome == "delivered":
        return DeliveryPlan(("sent", "delivered"))
    if outcome == "undelivered":
        code = rng.choice(list(UNDELIVERED_ERRORS))
        return DeliveryPlan(("sent", "undelivered"), code, UNDELIVERED_ERRORS[code])
    code = rng.choice(list(FAILED_ERRORS))
    return DeliveryPlan(("failed",), code, FAILED_ERRORS[code])
