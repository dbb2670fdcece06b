"""dramatiq actors. Thin: each one loads what it needs and calls into shared/.

`creditq worker` runs `dramatiq workers`; importing this package binds the actors to the
broker the environment names (CREDITQ_BROKER: Redis on REDIS_URL, or RabbitMQ on AMQP_URL), or to the one a test
installed first.
"""

from shared.broker import broker_from_environment

broker = broker_from_environment()

from . import (  # noqa: E402,F401  (declare the actors on `broker`)
    billing,
    campaigns,
    idempotency,
    payments,
    reporting,
    retention,
    sending,
    settling,
    sweeping,
    voice,
    webhooks,
)
