"""Quiet hours: campaign messages reach a recipient only inside a daily window of their local time.

Pure functions of an instant, the recipient's possible time zones and the window. A number whose
zone is ambiguous (libphonenumber only knows its country) must be inside the window in every one
of its zones. Local times are computed with zoneinfo, so the answer is right across DST changes.
"""

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from shared.errors import ValidationFailed

DEFAULT_START = time(8, 0)
DEFAULT_END = time(21, 0)
_MAX_STEPS = 16  # zones whose windows never overlap settle for the first zone's window


@dataclass(frozen=True)
class Window:
    """Sending is allowed from `start` (inclusive) to `end` (exclusive), local time; start > end wraps midnight;
    start == end means no quiet hours."""

    start: time = DEFAULT_START
    end: time = DEFAULT_END

    def contains(self, local: time) -> bool:
        if self.start == self.end:  # no quiet hours
            return True
        if self.start < self.end:
            return self.start <= local < self.end
        return local >= self.start or local < self.end

    def as_dict(self) -> dict:
        return {"start": self.start.strftime("%H:%M"), "end": self.end.strftime("%H:%M")}


def parse_window(raw: object, *, field: str = "quiet_hours") -> Window:
    """{"start": "08:00", "end": "21:00"} (either may be left out) -> Window; None -> the default window."""
    if raw is None:
        return Window()
    if not isinstance(raw, dict):
        raise ValidationFailed(f"{field} must be an object with start and end, such as "
                               '{"start": "08:00", "end": "21:00"}', errors={field: "must have start and end"})
    if unknown := sorted(set(raw) - {"start", "end"}):
        raise ValidationFailed(f"{field} takes start and end only, not {', '.join(map(repr, unknown))}",
                               errors={f"{field}.{name}": "is not a field of it: start and end only"
                                       for name in unknown})
    parts = {}
    for name, default in (("start", DEFAULT_START), ("end", DEFAULT_END)):
        value = raw.get(name)
        try:
            parts[name] = default if value is None else time.fromisoformat(value) if isinstance(value, str) else None
        except ValueError:
            parts[name] = None
        if parts[name] is None or parts[name].tzinfo is not None:
            reason = "must be a local time such as 08:00"
            raise ValidationFailed(f"{field}.{name} {reason}", errors={f"{field}.{name}": reason})
    return Window(parts["start"], parts["end"])


def zones(names: tuple[str, ...], fallback: str) -> tuple[ZoneInfo, ...]:
    """The ZoneInfo objects of a number's zones; `fallback` (the account's zone) when none is known."""
    found = []
    for name in names or (fallback,):
        try:
            found.append(ZoneInfo(name))
        except (ZoneInfoNotFoundError, ValueError):
            continue
    return tuple(found) or (ZoneInfo(fallback),)


def next_allowed(now: datetime, recipient_zones: tuple[ZoneInfo, ...], window: Window) -> datetime:
    """`now` when it is inside the window in every zone, else the earliest later instant that is (UTC)."""
    candidate = now.astimezone(UTC)
    for _ in range(_MAX_STEPS):
        outside = [zone for zone in recipient_zones if not window.contains(candidate.astimezone(zone).time())]
        if not outside:
            return candidate
        candidate = max(_next_start(candidate, zone, window) for zone in outside)
    return _next_start(now.astimezone(UTC), recipient_zones[0], window)


def _next_start(instant: datetime, zone: ZoneInfo, window: Window) -> datetime:
    """The next time the window opens in `zone` after `instant` (a start inside a DST gap opens after the gap)."""
    local_day = instant.astimezone(zone).date()
    for offset in range(3):
        opening = _at(local_day + timedelta(days=offset), window.start, zone)
        if opening > instant:
            return opening
    raise AssertionError("a window opens every day")  # pragma: no cover


def _at(day: date, moment: time, zone: ZoneInfo) -> datetime:
    """The UTC instant of a local wall time. One inside a DST gap takes the offset before the gap (PEP 495),
    which lands after it; one that occurs twice (fall back) is its first occurrence."""
    return datetime.combine(day, moment, tzinfo=zone).astimezone(UTC)
