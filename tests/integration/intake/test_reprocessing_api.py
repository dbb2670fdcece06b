"""Toll-free reprocessing over HTTP: the account's setting, and the link between a filtered text and its resend."""

from datetime import UTC, datetime

import pytest

from intake.app import init_app
from shared.messaging.reprocessing import resend_from_toll_free
from shared.messaging.settlement import Settled
from shared.models import Message, PhoneNumber
from tests.integration.intake.test_accounts_api import OPERATOR, create_account

LOCAL, TOLL_FREE, RECIPIENT = "+14155550199", "+18005550100", "+14155550100"


@pytest.fixture
async def client(aiohttp_client, settings, sqlite_database, fake_broker):
    return await aiohttp_client(init_app(settings, database=sqlite_database, broker=fake_broker))


async def test_the_owner_turns_toll_free_reprocessing_on_and_off_with_the_account_key(client):
    # given an account and its own key; reprocessing is off by default
    account_id, own = await create_account(client)
    path = f"/v1/accounts/{account_id}"
    assert (await (await client.get(path, headers=own)).json())["settings"]["toll_free_reprocessing"] is False

    # when the owner turns it on
    changed = await client.patch(path, headers=own, json={"settings": {"toll_free_reprocessing": True}})

    # then the account shows it on, and the rest of the account is unchanged
    assert changed.status == 200, await changed.text()
    assert (await changed.json())["settings"]["toll_free_reprocessing"] is True
    shown = await (await client.get(path, headers=OPERATOR)).json()
    assert (shown["settings"]["toll_free_reprocessing"], shown["quiet_hours_scope"]) == (True, "automated")

    # and it turns off the same way
    off = await client.patch(path, headers=own, json={"settings": {"toll_free_reprocessing": False}})
    assert (await off.json())["settings"]["toll_free_reprocessing"] is False


async def test_another_tenant_cannot_change_the_setting(client):
    # given two accounts
    account_id, _ = await create_account(client)
    _, intruder = await create_account(client)

    # when the second one's key tries to turn the first one's reprocessing on
    refused = await client.patch(f"/v1/accounts/{account_id}", headers=intruder,
                                 json={"settings": {"toll_free_reprocessing": True}})

    # then it is not found, and nothing changed
    assert refused.status == 404
    shown = await (await client.get(f"/v1/accounts/{account_id}", headers=OPERATOR)).json()
    assert shown["settings"]["toll_free_reprocessing"] is False


@pytest.mark.parametrize(("bad", "field"), [
    ({"toll_free_reprocessing": "yes"}, "settings.toll_free_reprocessing"),
    ({"toll_free_reprocesing": True}, "settings.toll_free_reprocesing"),
    ("on", "settings"),
])
async def test_a_bad_setting_is_a_422_naming_it(client, bad, field):
    account_id, own = await create_account(client)

    refused = await client.patch(f"/v1/accounts/{account_id}", headers=own, json={"settings": bad})

    assert (refused.status, list((await refused.json())["errors"])) == (422, [field])


async def test_a_filtered_text_and_its_resend_name_each_other(client, sqlite_database):
    # given an account with reprocessing on whose text from a local number was filtered and resent
    account_id, own = await create_account(client)
    await client.patch(f"/v1/accounts/{account_id}", headers=own, json={"settings": {"toll_free_reprocessing": True}})
    now = datetime.now(UTC)
    with sqlite_database.unit_of_work() as session:
        session.add_all([PhoneNumber(account_id=account_id, phone=LOCAL, type="long_code"),
                         PhoneNumber(account_id=account_id, phone=TOLL_FREE, type="toll_free"),
                         Message(id="msg_original", account_id=account_id, to=RECIPIENT, from_=LOCAL, body="Hi",
                                 status="undelivered", error_code=30007, created_at=now, updated_at=now)])
    with sqlite_database.unit_of_work() as session:
        resend_id = resend_from_toll_free(session, Settled("settled", "msg_original", account_id, "undelivered", 30007),
                                          now=now)

    # when the owner reads both
    original = await (await client.get("/v1/messages/msg_original", headers=own)).json()
    resend = await (await client.get(f"/v1/messages/{resend_id}", headers=own)).json()

    # then each names the other, and the resend is from the toll-free number at its own price
    assert (original["reprocessed_as"], original["reprocessed_from"], original["error_code"]) == (
        resend_id, None, 30007)
    assert (resend["reprocessed_from"], resend["reprocessed_as"]) == ("msg_original", None)
    assert (resend["from"], resend["to"], resend["credits_estimated"]) == (TOLL_FREE, RECIPIENT, "1")

    # and another tenant sees neither
    _, intruder = await create_account(client)
    for message_id in ("msg_original", resend_id):
        assert (await client.get(f"/v1/messages/{message_id}", headers=intruder)).status == 404
