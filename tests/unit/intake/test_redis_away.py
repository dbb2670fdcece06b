"""While Redis is away the intake answers for what it stored (the sweepers enqueue its jobs later), never 500 or 503
after a commit: a client's retry would then send the same thing twice."""

import fakeredis
import pytest
from sqlalchemy import select

from intake.app import init_app
from shared.models import Campaign, Message
from tests.support.brokers import EnqueueRecorder, install_broker
from tests.support.realty import SENDER, account_key  # noqa: F401  (fixture)


@pytest.fixture
def redis_server():
    return fakeredis.FakeServer()


@pytest.fixture
def broker(redis_server):
    """dramatiq's RedisBroker on a fake Redis server the test can take away, carrying the workers' actors."""
    broker = install_broker(fakeredis.FakeRedis(server=redis_server))
    import workers  # noqa: F401  (declares the actors on it)

    yield broker
    broker.close()


@pytest.fixture
def enqueued(broker) -> list:
    """The jobs that reached Redis."""
    recorder = EnqueueRecorder()
    broker.add_middleware(recorder)
    return recorder.messages


@pytest.fixture
async def client(aiohttp_client, settings, sqlite_database, broker, account_key):  # noqa: F811
    return await aiohttp_client(init_app(settings, database=sqlite_database, broker=broker))


async def test_texts_and_a_resumed_campaign_are_stored_and_answered_while_redis_is_away(client, sqlite_database,
                                                                                        account_key,  # noqa: F811
                                                                                        redis_server, enqueued):
    # Given a paused campaign of the account
    headers = {"Authorization": f"Bearer {account_key}"}
    created = await client.post("/v1/campaigns", headers=headers, json={
        "name": "Open house", "from": SENDER, "body": "Hi {{ name }}",
        "recipients": [{"to": "+14155550100", "fields": {"name": "Ann"}}]})
    assert created.status == 202, await created.text()
    campaign_id = (await created.json())["id"]
    paused = await client.post(f"/v1/campaigns/{campaign_id}/pause", headers=headers)
    assert paused.status == 200, await paused.text()

    jobs_before = len(enqueued)

    # When Redis goes away, and a text is posted (then retried with its key) and the campaign resumed
    redis_server.connected = False
    keyed = {**headers, "Idempotency-Key": "away-1"}
    text = {"to": "+14155550100", "from": SENDER, "body": "Open house Sunday"}
    sent = await client.post("/v1/messages", headers=keyed, json=text)
    retried = await client.post("/v1/messages", headers=keyed, json=text)
    resumed = await client.post(f"/v1/campaigns/{campaign_id}/resume", headers=headers)

    # Then each is answered as usual, and what was answered is stored once, waiting for the sweepers
    assert len(enqueued) == jobs_before  # no job reached Redis
    assert sent.status == retried.status == 202, await sent.text()
    assert (await retried.json())["id"] == (await sent.json())["id"]
    assert resumed.status == 200 and (await resumed.json())["status"] == "running", await resumed.text()
    with sqlite_database.read_only() as session:
        texts = list(session.scalars(select(Message).where(Message.campaign_id.is_(None))))
        assert [(m.id, m.status) for m in texts] == [((await sent.json())["id"], "accepted")]
        assert session.get(Campaign, campaign_id).status == "running"
