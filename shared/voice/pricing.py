"""What a call costs and what its hold covers: the one place the per-minute arithmetic lives.

Twilio bills started minutes of CallDuration; creditq charges the same minutes at the rate card's per-minute
price, for each leg (a bridge calls two phones), plus the flat machine-detection charge of a number called.
"""

from dataclasses import dataclass

from shared.messaging.phone_numbers import country_of
from shared.messaging.rates import RateCard

SECONDS_PER_MINUTE = 60


def started_minutes(seconds: int) -> int:
    """ceil(seconds / 60): Twilio's billed minutes of a call's CallDuration."""
    return -(-max(seconds, 0) // SECONDS_PER_MINUTE)


@dataclass(frozen=True)
class CallPrice:
    """Millicredits: `per_minute` for all legs together, `flat` once per number called (machine detection)."""

    per_minute: int
    flat: int

    def cost(self, minutes: int) -> int:
        return minutes * self.per_minute + self.flat

    def minutes_covered(self, available: int | None, wanted: int) -> int:
        """The whole minutes, at most `wanted`, a hold within `available` can cover (None: no limit)."""
        if available is None:
            return wanted
        return max(min(wanted, (available - self.flat) // self.per_minute), 0)

    def charge(self, duration_seconds: int, *, placed: bool) -> tuple[int, int]:
        """(minutes billed, millicredits) for a call that talked `duration_seconds`; nothing for a call Twilio
        never placed."""
        if not placed:
            return 0, 0
        minutes = started_minutes(duration_seconds)
        return minutes, self.cost(minutes)


def call_price(rate_card: RateCard, to: str, *, item: str, legs: int = 1, machine_detection: bool = False) -> CallPrice:
    """`item` is call_outgoing or voice_broadcast; both legs of a bridge are priced at the rate of `to`."""
    country = country_of(to)
    flat = rate_card.price("answering_machine_detection", country=country) if machine_detection else 0
    return CallPrice(per_minute=rate_card.price(item, country=country) * legs, flat=flat)
