"""POST /v1/estimate over HTTP: answers for individuals and groups, and problem+json for bad input."""

import pytest

from intake.app import init_app
from shared.api_keys import issue_key
from shared.models import Account, PhoneNumber

OPERATOR = {"Authorization": "Bearer test-operator-key-0123456789"}


@pytest.fixture
def app(settings, sqlite_database, fake_broker):
    return init_app(settings, database=sqlite_database, broker=fake_broker)


@pytest.fixture
async def client(aiohttp_client, app):
    return await aiohttp_client(app)


@pytest.fixture
def account_key(sqlite_database) -> str:
    """An account that owns a toll-free number; another account owns a short code."""
    with sqlite_database.unit_of_work() as session:
        session.add_all([Account(id="acct_realty", name="Realty"), Account(id="acct_church", name="Church")])
        session.flush()
        session.add_all([
            PhoneNumber(account_id="acct_realty", phone="+18005550100", type="toll_free"),
            PhoneNumber(account_id="acct_church", phone="12345", type="short_code"),
        ])
        return issue_key(session, "acct_realty")


async def test_an_individual_estimate(client):
    response = await client.post("/v1/estimate", json={"body": "Open house Sunday!", "to": ["+14155550100"]},
                                 headers=OPERATOR)

    assert response.status == 200
    assert await response.json() == {
        "characters": 18, "encoding": "GSM-7", "segments": 1, "credits_per_recipient": "1", "recipients": 1,
        "credits_total": "1", "non_gsm_characters": [], "channel": "sms", "sender_type": "long_code",
    }


async def test_a_group_estimate_in_ucs2(client):
    body = "Service at 10 🙏 " + "a" * 60

    response = await client.post("/v1/estimate", json={"body": body, "recipients": 250}, headers=OPERATOR)

    answer = await response.json()
    assert (answer["encoding"], answer["segments"], answer["non_gsm_characters"]) == ("UCS-2", 2, ["🙏"])
    assert (answer["credits_per_recipient"], answer["recipients"], answer["credits_total"]) == ("2", 250, "500")


async def test_an_mms_is_priced_per_recipient(client):
    response = await client.post("/v1/estimate", headers=OPERATOR, json={
        "body": "", "to": ["+14155550100", "+12125551234"], "media_urls": ["https://example.com/flyer.jpg"]})

    answer = await response.json()
    assert (answer["channel"], answer["credits_total"]) == ("mms", "4")


async def test_the_accounts_toll_free_sender_sets_the_rate(client, account_key):
    response = await client.post("/v1/estimate", json={"body": "Hi", "from": "+18005550100", "recipients": 2},
                                 headers={"Authorization": f"Bearer {account_key}"})

    answer = await response.json()
    assert answer["sender_type"] == "toll_free"
    assert (answer["credits_per_recipient"], answer["credits_total"]) == ("1.5", "3")


async def test_another_accounts_number_is_priced_as_a_long_code(client, account_key):
    response = await client.post("/v1/estimate", json={"body": "Hi", "from": "12345"},
                                 headers={"Authorization": f"Bearer {account_key}"})

    assert (await response.json())["sender_type"] == "long_code"


async def test_smart_encoding_on_request(client):
    response = await client.post("/v1/estimate", json={"body": "It’s “here”", "smart_encoding": True},
                                 headers=OPERATOR)

    assert (await response.json())["encoding"] == "GSM-7"


async def test_an_estimate_needs_a_key(client):
    response = await client.post("/v1/estimate", json={"body": "Hi"})

    assert response.status == 401


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"body": ""}, "body"),
        ({}, "body"),
        ({"body": "a" * 1601}, "body"),
        ({"body": "Hi", "to": ["+1415555"]}, "to[0]"),
        ({"body": "Hi", "to": ["+14155550100", "not a number"]}, "to[1]"),
        ({"body": "Hi", "to": ["+442071838750"]}, "to[0]"),
        ({"body": "Hi", "to": "+14155550100"}, "to"),
        ({"body": "Hi", "recipients": -1}, "recipients"),
        ({"body": "Hi", "channel": "fax"}, "channel"),
        ({"body": ["Hi"]}, "body"),
        ({"body": "Hi", "from": 14155550100}, "from"),
        ({"body": "Hi", "smart_encoding": "yes"}, "smart_encoding"),
    ],
)
async def test_bad_input_is_a_422_problem_naming_the_field(client, payload, field):
    response = await client.post("/v1/estimate", json=payload, headers=OPERATOR)

    assert response.status == 422
    assert response.content_type == "application/problem+json"
    problem = await response.json()
    assert problem["status"] == 422 and problem["title"] and problem["detail"]
    assert field in problem["errors"]


async def test_a_body_that_is_not_json_is_a_400_problem(client):
    response = await client.post("/v1/estimate", data="body=Hi", headers=OPERATOR)

    assert response.status == 400
    assert response.content_type == "application/problem+json"


async def test_the_openapi_document_describes_the_estimate(client):
    document = await (await client.get("/v1/openapi.json")).json()

    operation = document["paths"]["/v1/estimate"]["post"]
    assert "to" in operation["requestBody"]["content"]["application/json"]["schema"]["properties"]
    answers = operation["responses"]["200"]["content"]["application/json"]["schema"]["anyOf"]  # a text's, a call's
    assert [sorted({"credits_total", "credits"} & set(answer["properties"])) for answer in answers] == [
        ["credits"], ["credits_total"]]
    assert "422" in operation["responses"]
