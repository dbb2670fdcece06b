"""The simulator's knobs: one mutable dataclass, settable from env, CLI flags and the control API.

It is mutable on purpose: e2e tests change the behaviour of a running simulator through
``POST /_sim/config``, and every handler reads the current values on each request.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from .delivery_errors import split_outcome

DEFAULT_ACCOUNT_SID = "AC" + "51" * 16  # a valid-looking sid (AC + 32 hex), easy to spot
DEFAULT_AUTH_TOKEN = "simulator-auth-token"
ENV_PREFIX = "TWILIO_SIM_"


class ConfigError(ValueError):
    """A knob was given a value the simulator cannot use."""


@dataclass(slots=True)
class SimulatorConfig:
    account_sid: str = DEFAULT_ACCOUNT_SID
    """The account sid requests must be made for (and callbacks are signed as)."""
    auth_token: str = DEFAULT_AUTH_TOKEN
    """The auth token requests are checked against and callbacks signed with."""
    latency_ms: int = 0
    """Added to every Twilio API request before it is answered."""
    rate_429: float = 0.0
    """Share of Twilio API requests refused with 429 / 20429."""
    retry_after_s: int = 1
    """The Retry-After of a 429, in seconds."""
    rate_5xx: float = 0.0
    """Share of Twilio API requests failing with 500 / 20500 (nothing is created)."""
    rate_timeout: float = 0.0
    """Share of Twilio API requests that hang for ``hang_s`` and then fail with 500 / 20500 (nothing is created):
    a client that gives up sooner only knows that no answer came."""
    rate_lost_answer: float = 0.0
    """Share of message creates that are made (and delivered, with their callbacks) but answered only after
    ``hang_s``: a client that gives up sooner never learns the sid."""
    hang_s: float = 30.0
    """How long a request picked by ``rate_timeout`` or ``rate_lost_answer`` waits for its answer, in seconds."""
    duplicate_callback_rate: float = 0.0
    """Chance that each status callback is delivered twice."""
    out_of_order_rate: float = 0.0
    """Chance that a message's final callback is delivered before its intermediate one."""
    outcomes: dict[str, float] = field(default_factory=lambda: {"delivered": 1.0})
    """Relative weights of the final status: delivered / undelivered / failed, the last two with a random error
    code of theirs or the one named (``undelivered:30007``, ``failed:30034``)."""
    sender_outcomes: dict[str, dict[str, float]] = field(default_factory=dict)
    """Outcome weights for the messages of one From number, instead of ``outcomes``: carriers filter a sender
    (``{"+14155550123": {"undelivered:30007": 1}}``; from the environment, that object as JSON)."""
    num_segments_override: int | None = None
    """Report this many segments for every message instead of counting them."""
    price_per_segment: Decimal = Decimal("0.00790")
    """The price a message reports per segment, in US dollars."""
    callback_delay_ms: int = 50
    """Time between a message's status changes (and so between its callbacks)."""
    callback_retries: int = 5
    """How often a callback answered with an error or not at all is tried again."""
    callback_retry_delay_ms: int = 200
    """First retry delay; it doubles on each further attempt."""
    callback_timeout_s: float = 5.0
    """How long a callback waits for the app's answer, in seconds."""
    callback_concurrency: int = 64
    """Fixed at start-up: the size of the callback worker pool and connection pool."""
    call_minute_ms: int = 60_000
    """Simulated time for calls: how many real milliseconds one call-minute takes (60000: real time; a few
    milliseconds let hundreds of calls fit in a test)."""
    ring_seconds: int = 5
    """How long a call rings before it is answered (or given up as busy, no-answer, failed)."""
    call_min_seconds: int = 5
    """The shortest an answered call lasts, in simulated seconds (before its TimeLimit)."""
    call_max_seconds: int = 180
    """The longest an answered call lasts: its seconds are drawn evenly from the range, then cut at its TimeLimit."""
    call_outcomes: dict[str, float] = field(default_factory=lambda: {"completed": 1.0})
    """Relative weights of how a call ends: completed / busy / no-answer / failed."""
    answered_by: dict[str, float] = field(default_factory=lambda: {"human": 1.0})
    """With MachineDetection, relative weights of its AnsweredBy: human, machine_start, machine_end_beep,
    machine_end_silence, machine_end_other, fax, unknown."""
    price_per_minute: Decimal = Decimal("0.01400")
    """The price a call reports per started minute, in US dollars."""
    transcription_text: str = "Hi, this is a message for you. Please call me back."
    """What every voicemail's transcription says."""
    seed: int | None = None
    """Seeds the simulator's randomness, for reproducible fault injection."""

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> SimulatorConfig:
        """Defaults overridden by ``TWILIO_SIM_<FIELD>`` variables (e.g. ``TWILIO_SIM_RATE_429``)."""
        config = cls()
        config.apply(
            {
                name: environ[ENV_PREFIX + name.upper()]
                for name in _PARSERS
                if ENV_PREFIX + name.upper() in environ
            }
        )
        return config

    def apply(self, changes: Mapping[str, Any]) -> None:
        """Validate every change first, then set them all: a bad request changes nothing."""
        unknown = set(changes) - set(_PARSERS)
        if unknown:
            raise ConfigError(f"unknown settings: {', '.join(sorted(unknown))}")
        parsed = {}
        for name, value in changes.items():
            try:
                parsed[name] = _PARSERS[name](value)
            except (TypeError, ValueError, ArithmeticError) as error:
                raise ConfigError(f"{name}: {error}") from None
        for name, value in parsed.items():
            setattr(self, name, value)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready view, the shape ``apply`` accepts."""
        values = dataclasses.asdict(self)
        values["price_per_segment"] = str(self.price_per_segment)
        values["price_per_minute"] = str(self.price_per_minute)
        return values


def _rate(value: Any) -> float:
    rate = float(value)
    if not 0.0 <= rate <= 1.0:
        raise ValueError("must be between 0 and 1")
    return rate


def _non_negative_int(value: Any) -> int:
    number = int(value)
    if number < 0:
        raise ValueError("must be >= 0")
    return number


def _non_negative_seconds(value: Any) -> float:
    seconds = float(value)
    if not 0.0 <= seconds < float("inf"):
        raise ValueError("must be a number of seconds >= 0")
    return seconds


def _positive_int(value: Any) -> int:
    number = int(value)
    if number < 1:
        raise ValueError("must be >= 1")
    return number


def _optional(parse: Callable[[Any], Any]) -> Callable[[Any], Any]:
    return lambda value: None if value in (None, "", "none", "None") else parse(value)


def _outcomes(value: Any) -> dict[str, float]:
    """Accepts a mapping or the CLI/env form ``delivered=0.9,undelivered=0.08,failed:30034=0.02``."""
    if isinstance(value, str):
        value = dict(part.split("=", 1) for part in value.split(",") if part.strip())
    weights = {name.strip(): float(weight) for name, weight in dict(value).items()}
    for outcome in weights:
        split_outcome(outcome)
    if any(weight < 0 for weight in weights.values()) or sum(weights.values()) <= 0:
        raise ValueError("weights must be >= 0 and not all zero")
    return weights


CALL_OUTCOMES = ("completed", "busy", "no-answer", "failed")
ANSWERED_BY = ("human", "machine_start", "machine_end_beep", "machine_end_silence", "machine_end_other", "fax",
               "unknown")


def _weights_of(names: tuple[str, ...]) -> Callable[[Any], dict[str, float]]:
    """Weights over `names`: a mapping, or the CLI/env form ``completed=0.8,busy=0.2``."""
    def parse(value: Any) -> dict[str, float]:
        if isinstance(value, str):
            value = dict(part.split("=", 1) for part in value.split(",") if part.strip())
        weights = {name.strip(): float(weight) for name, weight in dict(value).items()}
        if unknown := set(weights) - set(names):
            raise ValueError(f"unknown {', '.join(sorted(unknown))}; one of {', '.join(names)}")
        if any(weight < 0 for weight in weights.values()) or sum(weights.values()) <= 0:
            raise ValueError("weights must be >= 0 and not all zero")
        return weights
    return parse


def _sender_outcomes(value: Any) -> dict[str, dict[str, float]]:
    """A mapping of From number to outcome weights, or that mapping as JSON (the CLI/env form)."""
    if isinstance(value, str):
        value = json.loads(value) if value.strip() else {}
    return {str(sender): _outcomes(weights) for sender, weights in dict(value).items()}


def parse_account_sid(value: Any) -> str:
    sid = str(value)
    if len(sid) != 34 or not sid.startswith("AC") or not all(c in "0123456789abcdefABCDEF" for c in sid[2:]):
        raise ValueError("must be AC followed by 32 hex digits")
    return sid


def _token(value: Any) -> str:
    token = str(value)
    if not token:
        raise ValueError("must not be empty")
    return token


_PARSERS: dict[str, Callable[[Any], Any]] = {
    "account_sid": parse_account_sid,
    "auth_token": _token,
    "latency_ms": _non_negative_int,
    "rate_429": _rate,
    "retry_after_s": _non_negative_int,
    "rate_5xx": _rate,
    "rate_timeout": _rate,
    "rate_lost_answer": _rate,
    "hang_s": _non_negative_seconds,
    "duplicate_callback_rate": _rate,
    "out_of_order_rate": _rate,
    "outcomes": _outcomes,
    "sender_outcomes": _sender_outcomes,
    "num_segments_override": _optional(_positive_int),
    "price_per_segment": lambda value: Decimal(str(value)),
    "callback_delay_ms": _non_negative_int,
    "callback_retries": _non_negative_int,
    "callback_retry_delay_ms": _non_negative_int,
    "callback_timeout_s": float,
    "callback_concurrency": _positive_int,
    "call_minute_ms": _non_negative_int,
    "ring_seconds": _non_negative_int,
    "call_min_seconds": _non_negative_int,
    "call_max_seconds": _non_negative_int,
    "call_outcomes": _weights_of(CALL_OUTCOMES),
    "answered_by": _weights_of(ANSWERED_BY),
    "price_per_minute": lambda value: Decimal(str(value)),
    "transcription_text": str,
    "seed": _optional(int),
}
