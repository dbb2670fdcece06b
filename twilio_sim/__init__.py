"""A stand-in for Twilio's REST API and status callbacks, for dev, tests and benchmarks.

The product always reaches it through the official ``twilio`` package, pointed here by
base URL (see ``twilio_sim.client.simulated_client``).
"""

from .app import init_app, run
from .config import SimulatorConfig

__all__ = ["SimulatorConfig", "init_app", "run"]
