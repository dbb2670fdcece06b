"""POST /v1/campaigns under an Idempotency-Key: a creation that died half-way is finished by the client's retry."""

from sqlalchemy import func, select

from shared.campaigns import creation
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
