"""Per sender number throughput, shared by every worker process through Redis (GCRA-style booking).

Carriers and Twilio meter each sender: a long code takes about 1 segment a second, toll-free 3,
a short code 100. Each sender has a "theoretical arrival time" (TAT) in Redis: a reservation books
the next free slot at or after now and moves the TAT on by segments / rate. The Lua script reads
Redis' own clock, so processes on different machines share one timeline.

A reservation is a booking, not a question: call `reserve` once per send. Zero means send now;
otherwise the slot is booked that many seconds ahead — re-enqueue the send with that delay and,
when it runs, send without reserving again (a second reservation would book a second slot).
"""

import math
import os
from collections.abc import Mapping

from shared.config import ConfigError

DEFAULT_RATES: dict[str, float] = {"long_code": 1.0, "toll_free": 3.0, "short_code": 100.0}  # segments per second
RATES_ENV = "CREDITQ_SENDER_RATES"  # e.g. "long_code=1,toll_free=3,short_code=100"
KEY_PREFIX = "creditq:sender-throttle:"
MICROSECONDS = 1_000_000

# KEYS[1] the sender's TAT (microseconds, Redis clock); ARGV[1] microseconds this booking occupies.
# Returns the microseconds from now until the booked slot. string.format keeps all 16 digits
# (a bare number would be written with 14 significant digits by Redis' Lua 5.1).
_RESERVE = """
local now_parts = redis.call('TIME')
local now = tonumber(now_parts[1]) * 1000000 + tonumber(now_parts[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
local start = math.max(tat, now)
local new_tat = start + tonumber(ARGV[1])
local ttl_ms = math.floor((new_tat - now) / 1000) + 1000
redis.call('SET', KEYS[1], string.format('%d', new_tat), 'PX', string.format('%d', ttl_ms))
return string.format('%d', start - now)
"""


class SenderThrottle:
    """Books send slots per sender number; safe to share between threads (redis-py clients are)."""

    def __init__(self, redis_client, rates: Mapping[str, float] = DEFAULT_RATES):
        for sender_type, rate in rates.items():
            if not rate > 0:
                raise ValueError(f"rate for {sender_type} must be above zero, not {rate!r}")
        self._rates = dict(rates)
        self._reserve = redis_client.register_script(_RESERVE)

    def reserve(self, sender: str, sender_type: str, segments: int) -> float:
        """Book `segments` segments on `sender`; the seconds to wait before sending (0.0 = now)."""
        if sender_type not in self._rates:
            raise ValueError(f"unknown sender type {sender_type!r}; known: {', '.join(sorted(self._rates))}")
        if segments < 1:
            raise ValueError(f"segments must be at least 1, not {segments!r}")
        # Rounded up, so a rate is never exceeded through rounding (3/s books 333334 us per segment).
        occupies = math.ceil(segments * MICROSECONDS / self._rates[sender_type])
        waited = int(self._reserve(keys=[KEY_PREFIX + sender], args=[occupies]))
        return waited / MICROSECONDS


def rates_from_environment(environ: Mapping[str, str] = os.environ) -> dict[str, float]:
    """DEFAULT_RATES with the overrides in CREDITQ_SENDER_RATES ("toll_free=3,short_code=100")."""
    rates = dict(DEFAULT_RATES)
    raw = environ.get(RATES_ENV, "").strip()
    for part in filter(None, (piece.strip() for piece in raw.split(","))):
        sender_type, _, value = part.partition("=")
        try:
            rate = float(value)
        except ValueError:
            rate = 0.0
        if not sender_type.strip() or not 0 < rate < math.inf:
            raise ConfigError(f"{RATES_ENV}={raw!r}: {part!r} is not <sender type>=<segments per second above 0>")
        rates[sender_type.strip()] = rate
    return rates
