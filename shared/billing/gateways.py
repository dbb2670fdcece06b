"""Which payment gateway a process uses (PAYMENT_GATEWAY): Stripe over the official client, or the simulated one."""

import threading

from shared.billing.payments import PaymentGateway, SimulatedGateway
from shared.billing.stripe_gateway import StripeGateway
from shared.config import Settings

_simulated = SimulatedGateway()
_stripe_gateways: dict[tuple[str, str], PaymentGateway] = {}
_lock = threading.Lock()


def gateway_from_settings(settings: Settings) -> PaymentGateway:
    """The process's gateway: Stripe (one client per key and base, shared by the process), or, for unit tests
    only, the in-memory simulated one (shared.config refuses it when CREDITQ_ENV=production)."""
    if settings.payment_gateway == "simulated":
        return _simulated
    key = (settings.stripe_api_key, settings.stripe_api_base)
    with _lock:
        if key not in _stripe_gateways:
            _stripe_gateways[key] = StripeGateway(settings.stripe_api_key, settings.stripe_api_base)
        return _stripe_gateways[key]
