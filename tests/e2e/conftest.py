"""What every end-to-end module gets from its own `stack` (the running processes it starts)."""

import pytest

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
