"""What will happen to a message after Twilio accepts it: its statuses and final error, if any.

Decided once, at creation, from the configured outcome mix (the one for its From number, if it has
one), so the message's statuses and its callbacks tell the same story.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from .config import SimulatorConfig
from .delivery_errors import ERROR_MESSAGES, RANDOM_ERRORS, split_outcome

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


def plan_delivery(config: SimulatorConfig, rng: random.Random, from_: str | None) -> DeliveryPlan:
    weights = config.sender_outcomes.get(from_ or "", config.outcomes)
    outcomes = list(weights)
    status, code = split_outcome(rng.choices(outcomes, weights=[weights[o] for o in outcomes])[0])
    if status == "delivered":
        return DeliveryPlan(("sent", "delivered"))
    if code is None:
        code = rng.choice(list(RANDOM_ERRORS[status]))
    statuses = ("sent", "undelivered") if status == "undelivered" else ("failed",)
    return DeliveryPlan(statuses, code, ERROR_MESSAGES[code])
