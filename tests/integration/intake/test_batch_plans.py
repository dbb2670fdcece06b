"""The web's batch statements run on their generic plans (shared.db.Database.for_batches): PostgreSQL plans each once
per connection, not at every batch, which it did for the intake's facts and the status callbacks' lookups (their
custom plans' estimates know the values, so the generic plan never won)."""

import pytest
from sqlalchemy import text

from intake.app import init_app
from intake.enqueue import Enqueuer
from intake.routes.messages import WRITERS, AcceptBatcher
from intake.routes.webhooks import CallbackBatcher
from shared.db import Database
from shared.messaging.messages import MessageRequest
from shared.models import Base
from tests.integration.intake.test_callback_batches import DEPLOYMENT, callback, send_messages
from tests.integration.messaging.test_send_pipeline import RECIPIENT, SENDER, UNCAPPED, make_account
from tests.support.postgres import STATEMENT_STATISTICS, TemporaryPostgres

pytestmark = pytest.mark.postgres

BATCHES = 12  # more than the five executions PostgreSQL always plans for their values, and then some
POOL = 1  # connections kept; the pool may open as many again as overflow, so a statement meets at most 2 * POOL


@pytest.fixture(scope="module")
def planning_counted():
    """A PostgreSQL server of this module's own that counts how often each statement is planned."""
    with TemporaryPostgres(settings={**STATEMENT_STATISTICS, "pg_stat_statements.track_planning": "on"}) as server:
        yield server


@pytest.fixture
def counted(planning_counted, request) -> Database:
    database = Database(planning_counted.create_database(request.node.name[:40]), pool_size=POOL)
    Base.metadata.create_all(database.engine)
    with database.engine.begin() as connection:
        connection.execute(text("CREATE EXTENSION IF NOT EXISTS pg_stat_statements"))
        connection.execute(text("SELECT pg_stat_statements_reset()"))
    yield database
    database.dispose()


def planned(database: Database, fragment: str) -> list[tuple[int, int]]:
    """(times planned, times run) of each statement run on this database whose text holds `fragment`."""
    with database.engine.connect() as connection:
        return [tuple(row) for row in connection.execute(text(
            "SELECT plans, calls FROM pg_stat_statements WHERE dbid = (SELECT oid FROM pg_database"
            " WHERE datname = current_database()) AND query LIKE :pattern"), {"pattern": f"%{fragment}%"})]


async def test_the_intakes_facts_are_planned_once_not_at_every_batch(counted, broker):
    # given an account that can pay, and the accept batcher
    account_id = make_account(counted, 100)
    with counted.for_batches(POOL) as batches:
        batcher = AcceptBatcher(batches, Enqueuer(broker), cap=UNCAPPED, writers=1)
        batcher.start()

        # when twelve batches are accepted, one after the other
        try:
            for n in range(BATCHES):
                await batcher.accept(account_id, MessageRequest(to=RECIPIENT, from_=SENDER, body=f"hello {n}"))
        finally:
            await batcher.close()

    # then the facts statement ran twelve times and was planned at most once on each connection (not twelve times)
    (times_planned, times_run), = planned(counted, " AS ask")
    assert times_run == BATCHES and times_planned <= 2 * POOL


def test_a_callback_batchs_lookups_are_planned_once_not_at_every_batch(counted, fake_broker):
    # given messages sent, each waiting for its callback, and the callback batcher
    sids = send_messages(counted)
    with counted.for_batches(POOL) as batches:
        batcher = CallbackBatcher(batches, Enqueuer(fake_broker), DEPLOYMENT)

        # when twelve batches of reports are applied, one after the other
        for n in range(BATCHES):
            batcher.apply_batch([callback(sid, "delivered") for sid in sids[n::BATCHES]])

    # then the statements that read the batch's messages by sid and by id, the one that applies the reports and the
    # one that settles the messages they made final, each ran twelve times and were planned at most once on each
    # connection
    for fragment in ("messages.twilio_sid = ANY", "messages.id = ANY", "AS r(message_id, rank",
                     "LATERAL ledger_settle("):
        (times_planned, times_run), = planned(counted, fragment)
        assert times_run == BATCHES and times_planned <= 2 * POOL, (fragment, times_planned)


async def test_the_web_accepts_through_a_pool_of_generic_plans(counted, fake_broker, settings, aiohttp_client):
    # given the web app on PostgreSQL, and an account that can pay
    account_id = make_account(counted, 100)
    client = await aiohttp_client(init_app(settings, database=counted, broker=fake_broker))

    # when twelve messages are sent, one after the other
    for n in range(BATCHES):
        sent = await client.post("/v1/messages", headers={"Authorization": f"Bearer {settings.admin_key}"},
                                 json={"account_id": account_id, "to": RECIPIENT, "from": SENDER, "body": f"hi {n}"})
        assert sent.status == 202, await sent.text()

    # then their facts were planned at most once on each of the batch writers' connections, and no transaction
    # spent a round trip setting the plans
    (times_planned, times_run), = planned(counted, " AS ask")
    assert times_run == BATCHES and times_planned <= 2 * WRITERS
    assert planned(counted, "plan_cache_mode") == []


def test_the_batch_pool_keeps_the_server_options_its_url_gives(counted):
    # given a database URL that sets a server option of its own
    database = Database(counted.url + "?options=-c%20statement_timeout%3D1234", pool_size=1)

    # when the batch writers' pool connects
    with database.for_batches(1) as batches, batches.engine.connect() as connection:
        settings = [connection.exec_driver_sql(f"SHOW {name}").scalar() for name in ("statement_timeout",
                                                                                    "plan_cache_mode")]
    database.dispose()

    # then it has the URL's option and the generic plans both
    assert settings == ["1234ms", "force_generic_plan"]


def test_the_batch_pool_keeps_the_server_options_pgoptions_gives(counted, monkeypatch):
    # given server options set the libpq way, in the environment
    monkeypatch.setenv("PGOPTIONS", "-c statement_timeout=4321")

    # when the batch writers' pool connects / then it has them and the generic plans both
    with counted.for_batches(1) as batches, batches.engine.connect() as connection:
        assert [connection.exec_driver_sql(f"SHOW {name}").scalar() for name in ("statement_timeout",
                                                                                 "plan_cache_mode")] == [
            "4321ms", "force_generic_plan"]
