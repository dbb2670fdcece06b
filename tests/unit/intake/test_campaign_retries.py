"""POST /v1/campaigns under an Idempotency-Key: a creation that died half-way is finished by the client's retry; a
resumed campaign's held texts are enqueued where its account's campaign texts wait."""

from datetime import UTC, datetime

from sqlalchemy import func, select

from shared.campaigns import creation, fan_out
from shared.campaigns.bulk_queues import bulk_actor_for, bulk_queue_for
from shared.messaging.rates import default_rate_card
from shared.models import Campaign, CampaignRecipient
from tests.support.realty import SENDER, account_key, client  # noqa: F401  (fixtures)


async def test_a_retry_with_the_same_key_finishes_the_campaign_its_first_try_began(client, sqlite_database,
                                                                                   account_key, monkeypatch):
    monkeypatch.setattr(creation, "RECIPIENT_CHUNK", 2)
    csv_text = "to,name\n" + "".join(f"+1415555{n:04d},x\n" for n in range(100, 105))
    request = dict(params={"name": "Open house", "from": SENDER, "body": "Hi {{ name }}"}, data=csv_text.encode(),
                   headers={"Authorization": f"Bearer {account_key}", "Content-Type": "text/csv",
                            "Idempotency-Key": "spring-1"})
    write_chunk = creation._write_recipients

    def dies_on_the_second_chunk(session, campaign_id, plan, start):
        if start:
            raise ConnectionError("the database went away")
        write_chunk(session, campaign_id, plan, start)

    with monkeypatch.context() as crash:
        crash.setattr(creation, "_write_recipients", dies_on_the_second_chunk)
        died = await client.post("/v1/campaigns", **request)
    assert died.status == 500

    retried = await client.post("/v1/campaigns", **request)

    assert retried.status == 202 and (await retried.json())["status"] == "running"
    with sqlite_database.read_only() as session:
        campaigns = list(session.scalars(select(Campaign)))
        assert [(c.id, c.status) for c in campaigns] == [((await retried.json())["id"], "running")]
        assert session.scalar(select(func.count(func.distinct(CampaignRecipient.position)))) == \
            session.scalar(select(func.count()).select_from(CampaignRecipient)) == 5



async def test_a_resumed_campaigns_held_texts_go_on_its_accounts_queue(client, sqlite_database, account_key,  # noqa: F811
                                                                       enqueued):
    # given a campaign whose texts were made, then held by a pause
    headers = {"Authorization": f"Bearer {account_key}"}
    created = await client.post("/v1/campaigns", headers=headers, json={
        "name": "Open house", "from": SENDER, "body": "Open house Sunday",
        "quiet_hours": {"start": "00:00", "end": "00:00"},
        "recipients": [{"to": "+14155550101"}, {"to": "+14155550102"}]})
    assert created.status == 202, await created.text()
    campaign_id = (await created.json())["id"]
    with sqlite_database.unit_of_work() as session:
        assert fan_out.start_step(session, campaign_id, 0, now=datetime.now(UTC)).chunks == 1
    with sqlite_database.unit_of_work() as session:
        texts = fan_out.fan_out_chunk(session, campaign_id, 0, 0, rate_card=default_rate_card(),
                                      hold_ttl_seconds=900, now=datetime.now(UTC))
    assert (await client.post(f"/v1/campaigns/{campaign_id}/pause", headers=headers)).status == 200
    enqueued.clear()

    # when it is resumed
    resumed = await client.post(f"/v1/campaigns/{campaign_id}/resume", headers=headers)

    # then its texts are enqueued on the queue of its account's campaign texts, for that queue's actor
    assert resumed.status == 200, await resumed.text()
    sends = [message for message in enqueued if message.actor_name != "fan_out_campaign"]
    assert sorted(message.args[0] for message in sends) == sorted(texts)
    assert {(message.actor_name, message.queue_name) for message in sends} == {
        (bulk_actor_for("acct_1"), bulk_queue_for("acct_1"))}
