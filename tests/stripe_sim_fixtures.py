"""The Stripe stand-in served in-process on a background loop, for sync tests that use the official client.

Import the fixtures into a test module:
``from tests.stripe_sim_fixtures import background_loop, stripe_stand_in  # noqa: F401``.
Its webhook URL is empty: events are kept, and a test reads them (`events()`) to deliver them as it likes.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests

from shared.billing.stripe_gateway import StripeGateway
from stripe_sim import SimulatorConfig, init_app
from tests.twilio_sim_fixtures import BackgroundLoop, background_loop  # noqa: F401  (fixture)


@dataclass
class StripeStandIn:
    url: str
    config: SimulatorConfig
    database: Path

    def gateway(self) -> StripeGateway:
        return StripeGateway(self.config.api_key, self.url)

    def configure(self, **changes: Any) -> dict:
        response = requests.post(f"{self.url}/_sim/config", json=changes, timeout=10)
        response.raise_for_status()
        return response.json()

    def events(self, kind: str | None = None) -> list[dict]:
        events = requests.get(f"{self.url}/_sim/events", timeout=10).json()["data"]
        return [event for event in events if kind is None or event["type"] == kind]

    def payment_intents(self) -> list[dict]:
        return requests.get(f"{self.url}/_sim/payment_intents", timeout=10).json()["data"]

    def authenticate(self, intent_id: str) -> None:
        """The customer passes 3-D Secure on the stand-in's page."""
        requests.post(f"{self.url}/authenticate/{intent_id}", data={"action": "complete"}, allow_redirects=False,
                      timeout=10).raise_for_status()

    def complete_checkout(self, url: str, card: str = "pm_card_visa") -> requests.Response:
        return requests.post(url, data={"payment_method": card}, allow_redirects=False, timeout=10)

    def get(self, path: str) -> dict:
        return requests.get(f"{self.url}{path}", headers={"Authorization": f"Bearer {self.config.api_key}"},
                            timeout=10).json()

    def post(self, path: str, **form) -> requests.Response:
        return requests.post(f"{self.url}{path}", data=form, timeout=10,
                             headers={"Authorization": f"Bearer {self.config.api_key}"})


@pytest.fixture
def stripe_stand_in(background_loop: BackgroundLoop, tmp_path) -> Iterator[StripeStandIn]:  # noqa: F811
    """A fresh stand-in (its own SQLite file) for each test."""
    config = SimulatorConfig()
    database = tmp_path / "stripe-sim.db"
    yield StripeStandIn(background_loop.serve(init_app(config, database)), config, database)
