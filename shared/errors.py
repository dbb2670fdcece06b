"""Domain failures. Each edge (HTTP, CLI, worker) decides how to present them."""

import math
from datetime import datetime


class DomainError(Exception):
    """Base of every expected failure; its message is safe to show to the customer."""

    title = "Request failed"


class NotFound(DomainError):
    title = "Not found"


class ValidationFailed(DomainError):
    """Bad input; `errors` maps each offending field to what is wrong with it."""

    title = "Validation failed"

    def __init__(self, detail: str, errors: dict[str, str] | None = None):
        super().__init__(detail)
        self.errors = errors or {}


class Conflict(DomainError):
    title = "Conflict"


class InsufficientCredits(DomainError):
    title = "Insufficient credits"

    def __init__(self, detail: str, *, available: int, required: int, stops_at: dict | None = None):
        super().__init__(detail)
        self.available = available
        self.required = required
        self.stops_at = stops_at  # a campaign's pre-flight: {step, position, to} of the send it would stop at


class AccountLocked(DomainError):
    title = "Account locked"


class OptedOut(DomainError):
    title = "Recipient opted out"


class SendLimitReached(DomainError):
    """A new account's daily send cap (shared.messaging.send_cap) is used up until `resets_at` (its local midnight)."""

    title = "Daily send limit reached"

    def __init__(self, detail: str, *, limit: int, resets_at: datetime, now: datetime):
        super().__init__(detail)
        self.limit = limit
        self.resets_at = resets_at
        self.retry_after_seconds = max(math.ceil((resets_at - now).total_seconds()), 1)


class CallbackRejected(DomainError):
    """A webhook that does not name, or is not signed with, the credentials of the resource it is about."""

    title = "Forbidden"


class NotFinalYet(Exception):
    """A final status its resource's own account signed, not (yet) confirmed by Twilio: the sid is not stored yet,
    or Twilio does not say final. The confirmation is tried again later (a job's retry)."""
