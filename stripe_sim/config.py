"""The stand-in's knobs: one mutable dataclass, set from STRIPE_SIM_* variables, flags and ``POST /_sim/config``."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass

ENV_PREFIX = "STRIPE_SIM_"


class ConfigError(ValueError):
    """A knob was given a value the stand-in cannot use."""


@dataclass(slots=True)
class SimulatorConfig:
    api_key: str = "sk_test_creditq_stand_in"
    """The secret key requests must carry (``Authorization: Bearer``)."""
    webhook_url: str = ""
    """Where events are delivered; empty: they are kept, not sent."""
    webhook_secret: str = "whsec_creditq_stand_in"
    """Signs each delivery (``Stripe-Signature``), as a Stripe webhook endpoint's secret does."""
    public_url: str = ""
    """This stand-in's own URL, for the Checkout and 3-D Secure pages it links to (default: the request's host)."""
    response_delay_ms: int = 0
    """Wait this long after a request's work is saved and before answering: time to kill the stand-in mid-request."""
    event_delay_ms: int = 0
    """Hold each event this long before its first delivery."""
    event_duplicates: int = 1
    """Deliver each event this many times."""
    event_reorder: bool = False
    """Deliver the events due at once newest first."""
    event_failure_rate: float = 0.0
    """Share of deliveries that fail (and are retried later, as Stripe retries)."""
    event_loss_rate: float = 0.0
    """Share of events never delivered at all (a lost webhook)."""
    event_retry_ms: int = 500
    """Wait before retrying a failed delivery."""

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> SimulatorConfig:
        config = cls()
        config.apply({field.name: environ[ENV_PREFIX + field.name.upper()] for field in dataclasses.fields(cls)
                      if ENV_PREFIX + field.name.upper() in environ})
        return config

    def apply(self, values: Mapping[str, object]) -> None:
        """Set knobs from strings (env, flags) or JSON values (the control API); all or nothing."""
        parsed = {}
        types = {field.name: field.type for field in dataclasses.fields(self)}
        for name, raw in values.items():
            if name not in types:
                raise ConfigError(f"unknown knob {name!r}")
            parsed[name] = _parse(name, types[name], raw)
        for name, value in parsed.items():
            setattr(self, name, value)

    def as_dict(self) -> dict:
        return {field.name: getattr(self, field.name) for field in dataclasses.fields(self)}


def _parse(name: str, kind: str, raw: object) -> object:
    try:
        if kind == "bool":
            return raw if isinstance(raw, bool) else str(raw).lower() in ("1", "true", "yes")
        if kind == "int":
            value = int(raw)
            if value < 0:
                raise ValueError("must be >= 0")
            return value
        if kind == "float":
            value = float(raw)
            if not 0 <= value <= 1:
                raise ValueError("must be between 0 and 1")
            return value
        return str(raw)
    except (TypeError, ValueError) as error:
        raise ConfigError(f"{name}: {error}") from None
