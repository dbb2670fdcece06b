"""What every end-to-end module gets from its own `stack` (the running processes it starts)."""

import pytest
import requests

from shared.db import Database


@pytest.fixture(scope="module")
def database(stack):
    """The stack's PostgreSQL, to read what the processes stored."""
    database = Database(stack.database_url, pool_size=4)
    yield database
    database.dispose()


@pytest.fixture(scope="module")
def broker(stack):
    """The stack's broker (Redis or RabbitMQ), to see and put jobs as the processes do."""
    broker = stack.broker()
    yield broker
    broker.close()


@pytest.fixture
def sim(stack):
    """Set the stack's Twilio simulator's knobs (`sim(rate_429=0.5)`); it starts and ends each test reset."""
    requests.post(f"{stack.simulator_url}/_sim/reset", timeout=10).raise_for_status()
    yield lambda **knobs: requests.post(f"{stack.simulator_url}/_sim/config", json=knobs,
                                        timeout=10).raise_for_status()
    requests.post(f"{stack.simulator_url}/_sim/reset", timeout=10).raise_for_status()
