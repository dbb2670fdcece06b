"""Fixtures of the intake's integration tests."""

import pytest


@pytest.fixture
def broker(fake_broker):
    """fakeredis' broker with every actor declared on it, for the jobs the intake enqueues by name."""
    import workers  # noqa: F401  (declares the actors: on this broker, or moved onto it)

    return fake_broker
