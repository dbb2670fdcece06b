"""Shared fixtures: databases (SQLite file, real PostgreSQL), the embedded Redis, a RabbitMQ node, settings."""

import itertools
import os

import pytest

from shared.config import Settings, load_settings
from shared.db import Database
from shared.embedded_redis import EmbeddedRedis
from shared.models import Base
from shared.secrets import use_keys
from tests.support.postgres import TemporaryPostgres
from tests.support.rabbitmq import TemporaryRabbitmq
from tests.support.stack import SECRET_KEY

_database_names = itertools.count()


@pytest.fixture(scope="session", autouse=True)
def secret_keys():
    """Secrets at rest are encrypted in every test, under the key the e2e stacks run with; commands run
    in-process read it from the environment instead of generating one into ./.creditq."""
    before = os.environ.get("CREDITQ_SECRET_KEY")
    os.environ["CREDITQ_SECRET_KEY"] = SECRET_KEY
    use_keys([SECRET_KEY])
    yield [SECRET_KEY]
    use_keys(None)
    if before is None:
        os.environ.pop("CREDITQ_SECRET_KEY")
    else:
        os.environ["CREDITQ_SECRET_KEY"] = before


@pytest.fixture(scope="session")
def postgres_server():
    with TemporaryPostgres() as server:
        yield server


@pytest.fixture
def sqlite_database(tmp_path) -> Database:
    database = Database(f"sqlite:///{tmp_path / 'creditq.db'}")
    Base.metadata.create_all(database.engine)
    yield database
    database.dispose()


@pytest.fixture
def postgres_database(postgres_server) -> Database:
    url = postgres_server.create_database(f"test_{next(_database_names)}")
    database = Database(url, pool_size=20)
    Base.metadata.create_all(database.engine)
    yield database
    database.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database(request) -> Database:
    """The same test on SQLite and on a real PostgreSQL."""
    return request.getfixturevalue(f"{request.param}_database")


@pytest.fixture(scope="session")
def embedded_redis(tmp_path_factory):
    with EmbeddedRedis(tmp_path_factory.mktemp("redis")) as server:
        yield server


@pytest.fixture(scope="session")
def rabbitmq_server():
    """A RabbitMQ node of this test process's own (each pytest-xdist worker starts one), stopped at the end."""
    with TemporaryRabbitmq() as server:
        yield server


@pytest.fixture
def settings(tmp_path) -> Settings:
    return load_settings({
        "CREDITQ_DATA_DIR": str(tmp_path / "data"),
        "DATABASE_URL": f"sqlite:///{tmp_path / 'creditq.db'}",
        "CREDITQ_ADMIN_KEY": "test-operator-key-0123456789",
        "PAYMENT_GATEWAY": "simulated",
        "CREDITQ_ENV": "development",
    })


@pytest.fixture
def fake_broker():
    """dramatiq's RedisBroker on fakeredis[lua]: the real broker code without a server."""
    from tests.support.brokers import fake_redis_broker

    broker = fake_redis_broker()
    yield broker
    broker.close()


@pytest.fixture
def enqueued(fake_broker) -> list:
    """What the app enqueues on the test broker, which carries the workers' real actors (none of them runs)."""
    import workers  # noqa: F401  (declares the actors on the installed broker)
    from tests.support.brokers import EnqueueRecorder

    recorder = EnqueueRecorder()
    fake_broker.add_middleware(recorder)
    return recorder.messages
