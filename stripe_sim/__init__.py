"""A stand-in for Stripe's API and signed webhook events, for dev and tests.

The product reaches it only through the official ``stripe`` package, redirected by base URL
(``STRIPE_API_BASE``). Every object it returns starts from Stripe's own example of that resource
(``fixtures.json``, from Stripe's public OpenAPI repository, MIT: ``FIXTURES_LICENSE``), so it has
Stripe's fields and types. Its state is a SQLite file, so it survives a restart mid-payment.
"""

from .app import init_app, run
from .config import SimulatorConfig

__all__ = ["SimulatorConfig", "init_app", "run"]
