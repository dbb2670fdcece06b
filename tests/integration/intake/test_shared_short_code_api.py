"""The shared short code over HTTP: the owner's keyword, tenants kept apart, sending from the code, and inbound
texts to it routed by keyword through the signed Twilio webhook."""

import pytest
from sqlalchemy import select

from intake.app import init_app
from shared.config import load_settings
from shared.models import Message, OptOut
from twilio_sim.signature import twilio_signature

CODE = "12345"
OPERATOR = {"Authorization": "Bearer test-operator-key-0123456789"}
CONTACT = "+14155550100"
INBOUND_PATH = "/webhooks/twilio/inbound"
BODY_155 = "Open house this Sunday at 2pm, 14 Elm Street: four bedrooms, a garden and a garage. " \
           "Reply to book a private viewing or ask about the price, please. Thanks!"


def settings_with(tmp_path, **environ):
    return load_settings({"CREDITQ_DATA_DIR": str(tmp_path / "data"), "DATABASE_URL": f"sqlite:///{tmp_path / 'x.db'}",
                          "CREDITQ_ADMIN_KEY": "test-operator-key-0123456789", **environ})


@pytest.fixture
def settings(tmp_path):
    return settings_with(tmp_path, SHARED_SHORT_CODE=CODE)


@pytest.fixture
async def client(aiohttp_client, settings, sqlite_database, fake_broker):
    return await aiohttp_client(init_app(settings, database=sqlite_database, broker=fake_broker))


async def create_account(client, name: str) -> tuple[str, dict]:
    response = await client.post("/v1/accounts", headers=OPERATOR, json={
        "name": name, "plan": {"monthly_credits": "100", "cycle": "monthly", "rollover": "none"}})
    assert response.status == 201, await response.text()
    body = await response.json()
    return body["id"], {"Authorization": f"Bearer {body['api_key']}"}


async def set_keyword(client, account_id: str, key: dict, setting):
    return await client.patch(f"/v1/accounts/{account_id}", headers=key,
                              json={"settings": {"shared_short_code": setting}})


async def shown(client, account_id: str, key: dict):
    response = await client.get(f"/v1/accounts/{account_id}", headers=key)
    assert response.status == 200
    return (await response.json())["settings"]["shared_short_code"]


async def send(client, key: dict, body: str = "Open house Sunday", to: str = CONTACT):
    return await client.post("/v1/messages", headers=key, json={"to": to, "from": CODE, "body": body})


async def test_the_owner_sets_its_keyword_with_its_own_key_and_reads_it_under_settings(client):
    acme_id, acme = await create_account(client, "Acme")
    assert await shown(client, acme_id, acme) is None

    response = await set_keyword(client, acme_id, acme, {"keyword": "acme"})

    assert response.status == 200
    assert (await response.json())["settings"]["shared_short_code"] == {"keyword": "ACME", "code": CODE}
    assert await shown(client, acme_id, acme) == {"keyword": "ACME", "code": CODE}


async def test_another_tenant_can_neither_take_nor_read_someone_elses_keyword(client, settings, sqlite_database):
    # given Acme holds ACME
    acme_id, acme = await create_account(client, "Acme")
    rogue_id, rogue = await create_account(client, "Rogue")
    assert (await set_keyword(client, acme_id, acme, {"keyword": "ACME"})).status == 200

    # when another tenant tries Acme's account with its own key
    assert (await set_keyword(client, acme_id, rogue, {"keyword": "ROGUE"})).status == 404
    assert (await set_keyword(client, acme_id, rogue, None)).status == 404
    assert (await client.get(f"/v1/accounts/{acme_id}", headers=rogue)).status == 404

    # and asks for the keyword itself, in another case
    taken = await set_keyword(client, rogue_id, rogue, {"keyword": "aCmE"})

    # then a 409 problem names the keyword and nothing of its holder
    problem = await taken.json()
    assert (taken.status, taken.content_type) == (409, "application/problem+json")
    assert "ACME" in problem["detail"] and acme_id not in str(problem)
    # Acme keeps it, the rogue has none and cannot send from the code or receive Acme's texts
    assert await shown(client, acme_id, acme) == {"keyword": "ACME", "code": CODE}
    assert await shown(client, rogue_id, rogue) is None
    refused = await send(client, rogue)
    assert (refused.status, list((await refused.json())["errors"])) == (422, ["from"])
    assert (await inbound(client, settings, "ACME is the house still for sale?", sid=1)).status == 200
    with sqlite_database.unit_of_work() as session:
        assert session.scalars(select(Message.account_id).where(Message.direction == "inbound")).all() == [acme_id]


@pytest.mark.parametrize(("setting", "field"), [
    ({"keyword": "STOP"}, "settings.shared_short_code.keyword"),
    ({"keyword": "help"}, "settings.shared_short_code.keyword"),
    ({"keyword": "ac-me"}, "settings.shared_short_code.keyword"),
    ({"keyword": "A"}, "settings.shared_short_code.keyword"),
    ({"keyword": "A" * 16}, "settings.shared_short_code.keyword"),
    ({"keyword": 7}, "settings.shared_short_code.keyword"),
    ({}, "settings.shared_short_code.keyword"),
    ({"keyword": "ACME", "code": "99999"}, "settings.shared_short_code.code"),
    ("ACME", "settings.shared_short_code"),
])
async def test_an_invalid_keyword_is_a_422_naming_the_field(client, setting, field):
    acme_id, acme = await create_account(client, "Acme")

    response = await set_keyword(client, acme_id, acme, setting)

    assert (response.status, response.content_type) == (422, "application/problem+json")
    assert field in (await response.json())["errors"]
    assert await shown(client, acme_id, acme) is None


async def test_without_a_shared_short_code_setting_a_keyword_is_a_409(aiohttp_client, tmp_path, sqlite_database,
                                                                       fake_broker):
    client = await aiohttp_client(init_app(settings_with(tmp_path), database=sqlite_database, broker=fake_broker))
    acme_id, acme = await create_account(client, "Acme")

    response = await set_keyword(client, acme_id, acme, {"keyword": "ACME"})

    assert (response.status, response.content_type) == (409, "application/problem+json")
    assert "SHARED_SHORT_CODE" in (await response.json())["detail"]
    assert await shown(client, acme_id, acme) is None


async def test_an_account_sends_from_the_shared_code_only_with_a_keyword_and_pays_for_the_prefix(client):
    acme_id, acme = await create_account(client, "Acme")
    assert len(BODY_155) == 155  # one GSM-7 segment; with "ACME: " in front, two

    # without the setting, the shared code is not its number
    refused = await send(client, acme, BODY_155)
    assert (refused.status, list((await refused.json())["errors"])) == (422, ["from"])

    # with it, the text goes out as "ACME: ...", estimated, held and counted with the prefix, at short-code rates
    await set_keyword(client, acme_id, acme, {"keyword": "acme"})
    estimate = await (await client.post("/v1/estimate", headers=acme,
                                        json={"body": BODY_155, "to": [CONTACT], "from": CODE})).json()
    accepted = await send(client, acme, BODY_155)
    answer = await accepted.json()
    message = await (await client.get(f"/v1/messages/{answer['id']}", headers=acme)).json()

    assert (estimate["segments"], estimate["sender_type"], estimate["credits_total"]) == (2, "short_code", "2")
    assert (accepted.status, answer["estimate"]["segments"], answer["estimate"]["credits"]) == (202, 2, "2")
    assert (message["from"], message["body"], message["credits_estimated"]) == (CODE, f"ACME: {BODY_155}", "2")


async def test_null_releases_the_keyword_and_the_code_with_it(client):
    acme_id, acme = await create_account(client, "Acme")
    zen_id, zen = await create_account(client, "Zen")
    await set_keyword(client, acme_id, acme, {"keyword": "ACME"})

    released = await set_keyword(client, acme_id, acme, None)

    assert (released.status, (await released.json())["settings"]["shared_short_code"]) == (200, None)
    assert (await send(client, acme)).status == 422
    assert (await set_keyword(client, zen_id, zen, {"keyword": "acme"})).status == 200


def inbound(client, settings, body: str, *, sid: int, sender: str = CONTACT):
    """A text to the shared code as Twilio posts it: signed with the deployment's token (the code is its number)."""
    params = {"MessageSid": f"SM{sid:032d}", "From": sender, "To": CODE, "Body": body,
              "AccountSid": settings.twilio_account_sid}
    signature = twilio_signature(settings.twilio_auth_token, settings.public_base_url + INBOUND_PATH, params)
    return client.post(INBOUND_PATH, data=params, headers={"X-Twilio-Signature": signature})


def opted_out(database) -> set[tuple[str, str]]:
    with database.unit_of_work() as session:
        return {(row.account_id, row.phone) for row in session.scalars(select(OptOut))}


async def test_stop_keyword_opts_out_of_that_account_and_a_bare_stop_out_of_every_one(client, settings,
                                                                                     sqlite_database):
    # given two accounts with keywords on the shared code
    acme_id, acme = await create_account(client, "Acme")
    zen_id, zen = await create_account(client, "Zen")
    await set_keyword(client, acme_id, acme, {"keyword": "ACME"})
    await set_keyword(client, zen_id, zen, {"keyword": "ZEN"})

    # when the contact texts STOP ACME to the code
    response = await inbound(client, settings, "STOP acme", sid=1)

    # then only Acme may no longer text them (409 at intake); Zen still may
    assert response.status == 200 and response.content_type == "text/xml"
    assert opted_out(sqlite_database) == {(acme_id, CONTACT)}
    assert (await send(client, acme)).status == 409
    assert (await send(client, zen)).status == 202

    # when they text a bare STOP
    assert (await inbound(client, settings, "STOP", sid=2)).status == 200

    # then no account on the code may text them
    assert opted_out(sqlite_database) == {(acme_id, CONTACT), (zen_id, CONTACT)}
    assert (await send(client, zen)).status == 409


async def test_a_reply_naming_no_keyword_goes_to_the_last_sender_or_nowhere_without_a_500(client, settings,
                                                                                           sqlite_database):
    acme_id, acme = await create_account(client, "Acme")
    await set_keyword(client, acme_id, acme, {"keyword": "ACME"})
    assert (await send(client, acme, to=CONTACT)).status == 202

    assert (await inbound(client, settings, "Yes, 2pm works", sid=1)).status == 200
    nobody = await inbound(client, settings, "Who is this?", sid=2, sender="+14155550177")

    assert nobody.status == 200 and "<Response" in await nobody.text()
    with sqlite_database.unit_of_work() as session:
        assert session.execute(select(Message.account_id, Message.body)
                               .where(Message.direction == "inbound")).all() == [(acme_id, "Yes, 2pm works")]
