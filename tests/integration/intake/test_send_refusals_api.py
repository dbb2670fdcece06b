"""How POST /v1/messages words its refusals: the credits a send needs, and a country it cannot reach."""

import pytest

from intake.app import init_app

from .test_accounts_api import NO_PLAN, create_account, grant

SENDER = "+14155550100"


@pytest.fixture
async def client(aiohttp_client, settings, sqlite_database, fake_broker):
    return await aiohttp_client(init_app(settings, database=sqlite_database, broker=fake_broker))


async def account_with(client, credits: str) -> dict:
    account_id, own = await create_account(client, plan=NO_PLAN)
    await grant(client, account_id, credits, "bonus")
    number = await client.post(f"/v1/accounts/{account_id}/numbers", json={"phone": SENDER, "type": "long_code"},
                               headers=own)
    assert number.status == 201, await number.text()
    return own


async def test_a_send_that_needs_one_credit_says_one_credit(client):
    # given half a credit; a one-segment text costs 1 credit
    own = await account_with(client, "0.5")

    # when the text is sent
    send = await client.post("/v1/messages", json={"to": "+14155550199", "from": SENDER, "body": "Open house at 2"},
                             headers=own)

    # then the 402 says "1 credit", singular, and what is available
    assert send.status == 402, await send.text()
    problem = await send.json()
    assert problem["detail"] == "This message needs 1 credit; 0.5 are available."
    assert (problem["required"], problem["available"]) == ("1", "0.5")


async def test_a_send_that_needs_more_than_one_credit_says_credits(client):
    # given one credit; a 161-character text is two segments, 2 credits
    own = await account_with(client, "1")

    send = await client.post("/v1/messages", json={"to": "+14155550199", "from": SENDER, "body": "x" * 161},
                             headers=own)

    assert send.status == 402, await send.text()
    assert (await send.json())["detail"] == "This message needs 2 credits; 1 is available."


async def test_a_send_to_a_country_without_a_price_says_it_cannot_be_sent_there(client):
    # given an account with credits; the rate card prices only the US
    own = await account_with(client, "10")

    # when a text goes to a UK number
    send = await client.post("/v1/messages", json={"to": "+442071838750", "from": SENDER, "body": "Hello"},
                             headers=own)

    # then the 422 names the country and says the message cannot be sent there
    assert send.status == 422, await send.text()
    problem = await send.json()
    assert "Invalid estimate" not in problem["detail"]
    assert problem["detail"].startswith("Invalid message: to is in GB, where messages cannot be sent")
    assert problem["errors"]["to"].startswith("is in GB, where messages cannot be sent")


async def test_a_send_to_a_number_with_an_extension_is_refused_and_nothing_is_stored(client, sqlite_database):
    # given an account with credits
    own = await account_with(client, "10")

    # when a text goes to an office line with an extension, which a text cannot reach
    send = await client.post("/v1/messages", json={"to": "+1 415 555 0199 x22", "from": SENDER, "body": "Hello"},
                             headers=own)

    # then the 422 names the extension, and no message was stored to go to the line without it
    assert send.status == 422, await send.text()
    assert "extension (22)" in (await send.json())["errors"]["to"]
    listed = await (await client.get("/v1/messages", params={"to": "+14155550199"}, headers=own)).json()
    assert listed["data"] == []
