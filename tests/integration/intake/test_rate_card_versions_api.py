"""What a user sees of the rate card version that priced a text: on the message and on its ledger entry, and only
in its own account."""

import json
from datetime import UTC, datetime

import pytest

from intake.app import init_app
from shared.ledger import book
from shared.messaging.rates import BUNDLED_RATE_CARD, RATE_CARDS
from shared.models import Message
from shared.price_versions import load_file, publish
from tests.integration.intake.test_accounts_api import NO_PLAN, OPERATOR, create_account, grant
from tests.integration.intake.test_webhooks import CONTACT, SID, post_status

OUR_NUMBER = "+14155550199"


@pytest.fixture
async def client(aiohttp_client, settings, sqlite_database, fake_broker, enqueued):
    return await aiohttp_client(init_app(settings, database=sqlite_database, broker=fake_broker))


def _publish_dearer_texts(database) -> None:
    card = json.loads(BUNDLED_RATE_CARD.read_text())
    card["countries"]["US"]["rates"]["sms"]["long_code"] = "1.25"
    with database.unit_of_work() as session:
        load_file(session, RATE_CARDS, now=datetime.now(UTC))
        publish(session, RATE_CARDS, card, now=datetime.now(UTC))


def _sent_message(database, account_id: str) -> str:
    now = datetime.now(UTC)
    with database.unit_of_work() as session:
        hold = book.reserve(session, account_id, 1_000, reference="msg_priced", ttl_seconds=900, now=now,
                            idempotency_key="message:msg_priced:hold:0")
        session.add(Message(id="msg_priced", account_id=account_id, to=CONTACT, from_=OUR_NUMBER, body="Open house",
                            status="sent", twilio_sid=SID, twilio_status="queued", hold_id=hold.id,
                            credits_estimated=1_000, created_at=now, updated_at=now))
    return "msg_priced"


async def test_a_settled_text_shows_the_card_version_it_was_charged_by_to_its_own_account_only(
        client, settings, sqlite_database):
    # given a published card (version 2) with dearer texts, and an account with a number and a sent text
    _publish_dearer_texts(sqlite_database)
    account_id, own = await create_account(client, plan=NO_PLAN)
    await grant(client, account_id, "10", "purchase")
    assert (await client.post(f"/v1/accounts/{account_id}/numbers", json={"phone": OUR_NUMBER, "type": "long_code"},
                              headers=own)).status == 201
    message_id = _sent_message(sqlite_database, account_id)

    # when Twilio reports it delivered in one segment
    assert await post_status(client, settings, "delivered", NumSegments="1") == 200

    # then the message and its usage entry name version 2, at its price
    shown = await (await client.get(f"/v1/messages/{message_id}", headers=own)).json()
    assert (shown["credits_charged"], shown["rate_card_version"]) == ("1.25", 2)
    entries = (await (await client.get(f"/v1/accounts/{account_id}/transactions", headers=own)).json())["data"]
    usage = [entry for entry in entries if entry["kind"] == "usage"]
    assert [(entry["credits"], entry["rate_card_version"]) for entry in usage] == [("-1.25", 2)]
    assert {entry["rate_card_version"] for entry in entries if entry["kind"] != "usage"} == {None}

    # and another tenant's key sees neither
    _, other = await create_account(client, plan=NO_PLAN)
    assert (await client.get(f"/v1/messages/{message_id}", headers=other)).status == 404
    assert (await client.get(f"/v1/accounts/{account_id}/transactions", headers=other)).status == 404
    assert (await client.get(f"/v1/messages/{message_id}", headers=OPERATOR)).status == 200
