"""The owner's low-credit threshold, set over HTTP with the account key, and the emails a settlement under it sends.

The web app, the send and settle actors (a real dramatiq Worker on fakeredis) and the in-process Twilio
simulator; the emails land in the project's file outbox. The same-day and next-day rules, replays and
lost sends are tests/unit/billing/test_low_balance.py's (they need a clock the test holds).
"""

from datetime import UTC, datetime

import pytest
from sqlalchemy import select

from intake.app import init_app
from shared.billing import low_balance
from shared.email import FileOutbox
from shared.messaging.settlement import settle_message
from shared.models import Message
from tests.integration.messaging.test_send_pipeline import CARD, FAST, gateways, report  # noqa: F401
from tests.support.in_process_worker import in_process_worker
from tests.twilio_sim_fixtures import (  # noqa: F401
    _callback_receiver_server,
    _simulator_server,
    background_loop,
    callback_receiver,
    simulator,
)

OPERATOR = {"Authorization": "Bearer test-operator-key-0123456789"}
SENDER = "+14155550123"


@pytest.fixture
def outbox(tmp_path):
    return FileOutbox(tmp_path / "outbox")


@pytest.fixture
def worker(sqlite_database, gateways, fake_broker, outbox):  # noqa: F811
    with in_process_worker(sqlite_database, gateways, fake_broker, outbox) as workers:
        yield workers


@pytest.fixture
async def client(aiohttp_client, settings, sqlite_database, fake_broker):
    return await aiohttp_client(init_app(settings, database=sqlite_database, broker=fake_broker))


async def new_account(client, credits: str, sender: str = SENDER) -> tuple[str, dict]:
    """An account with `credits` purchased, one sender number and an owner: its id and its key's header."""
    created = await client.post("/v1/accounts", headers=OPERATOR, json={
        "name": "Grace Church", "timezone": "America/Chicago", "overdraft": {"policy": "prepaid"},
        "plan": {"monthly_credits": "0", "cycle": "monthly", "rollover": "none"}})
    assert created.status == 201, await created.text()
    account_id, own = (await created.json())["id"], {"Authorization": f"Bearer {(await created.json())['api_key']}"}
    granted = await client.post(f"/v1/accounts/{account_id}/grants", headers=OPERATOR,
                                json={"credits": credits, "kind": "purchase"})
    assert granted.status == 201, await granted.text()
    number = await client.post(f"/v1/accounts/{account_id}/numbers", headers=own,
                               json={"phone": sender, "type": "long_code"})
    assert number.status == 201, await number.text()
    await new_user(client, account_id, own, "Olive Owner", "olive@example.com", "owner")
    return account_id, own


async def new_user(client, account_id: str, own: dict, name: str, email: str, role: str) -> str:
    created = await client.post(f"/v1/accounts/{account_id}/users", headers=own,
                                json={"name": name, "email": email, "role": role})
    assert created.status == 201, await created.text()
    return (await created.json())["id"]


async def send_and_settle(client, own: dict, database, fake_broker, worker, **fields) -> str:
    """POST /v1/messages; the send job takes it to Twilio, Twilio reports it delivered, the settle job (the
sweeper's) charges it and enqueues the notices it wrote."""
    accepted = await client.post("/v1/messages", headers=own,
                                 json={"to": "+14155550100", "from": SENDER, "body": "Choir at 7", **fields})
    assert accepted.status == 202, await accepted.text()
    message_id = (await accepted.json())["id"]
    fake_broker.join("send", timeout=10_000)
    report(database, message_id, "delivered", segments=1)
    worker.settling.settle_message.send(message_id)
    fake_broker.join("settle", timeout=10_000)
    fake_broker.join("billing", timeout=10_000)  # the notices the settlement wrote, sent by their own job
    with database.unit_of_work() as session:
        assert session.scalar(select(Message.credits_charged).where(Message.id == message_id)) == 1000
    return message_id


def mailed(outbox) -> list[tuple[str, str]]:
    return sorted((m["To"], m["Subject"]) for m in outbox.messages())


async def test_the_owner_sets_the_threshold_and_the_admin_whose_send_crosses_it_and_the_owner_are_emailed(
        client, sqlite_database, fake_broker, worker, outbox):
    # given an account with 10 credits, whose owner sets a 9.5-credit threshold with the account key
    account_id, own = await new_account(client, "10")
    changed = await client.patch(f"/v1/accounts/{account_id}", headers=own, json={"low_balance_threshold": "9.5"})
    assert (changed.status, (await changed.json())["low_balance_threshold"]) == (200, "9.5")
    admin_id = await new_user(client, account_id, own, "Ana Admin", "ana@example.com", "admin")

    # when the admin's text is settled at 1 credit, leaving 9
    await send_and_settle(client, own, sqlite_database, fake_broker, worker, user_id=admin_id)

    # then the admin who sent it and the owner get one email each, naming what is left
    assert mailed(outbox) == [("ana@example.com", "creditq: low balance (9 credits)"),
                              ("olive@example.com", "creditq: low balance (9 credits)")]

    # and the admin's next text that day sends nothing more
    await send_and_settle(client, own, sqlite_database, fake_broker, worker, user_id=admin_id)
    assert len(outbox.messages()) == 2


async def test_a_text_sent_with_the_account_key_emails_the_owner_only(client, sqlite_database, fake_broker, worker,
                                                                       outbox):
    # given an account under a 9.5-credit threshold the owner set, with an admin who sends nothing
    account_id, own = await new_account(client, "10")
    await client.patch(f"/v1/accounts/{account_id}", headers=own, json={"low_balance_threshold": "9.5"})
    await new_user(client, account_id, own, "Ana Admin", "ana@example.com", "admin")

    # when a text with no user (the account key's own) is settled under it
    await send_and_settle(client, own, sqlite_database, fake_broker, worker)

    # then only the owner is emailed
    assert mailed(outbox) == [("olive@example.com", "creditq: low balance (9 credits)")]


async def test_a_settle_job_killed_before_its_email_is_replayed_and_sends_it_once(client, sqlite_database,
                                                                                  fake_broker, worker, outbox):
    # given a text settled under the owner's threshold by a job killed after its commit, before the email
    account_id, own = await new_account(client, "10")
    await client.patch(f"/v1/accounts/{account_id}", headers=own, json={"low_balance_threshold": "9.5"})
    accepted = await client.post("/v1/messages", headers=own,
                                 json={"to": "+14155550100", "from": SENDER, "body": "Choir at 7"})
    message_id = (await accepted.json())["id"]
    fake_broker.join("send", timeout=10_000)
    report(sqlite_database, message_id, "delivered", segments=1)
    with sqlite_database.unit_of_work() as session:
        assert settle_message(session, message_id, rate_card=CARD, now=datetime.now(UTC)).outcome == "settled"
        assert low_balance.note_settlement(session, message_id, now=datetime.now(UTC)) == 1

    # when the settle job is delivered again, twice
    for _ in range(2):
        worker.settling.settle_message.send(message_id)
    fake_broker.join("settle", timeout=10_000)
    fake_broker.join("billing", timeout=10_000)

    # then the owner's email goes out once, and nothing is charged again
    assert mailed(outbox) == [("olive@example.com", "creditq: low balance (9 credits)")]
    with sqlite_database.unit_of_work() as session:
        assert session.scalar(select(Message.credits_charged).where(Message.id == message_id)) == 1000


async def test_another_tenants_key_cannot_set_the_threshold(client):
    # given two accounts
    account_id, own = await new_account(client, "10")
    _, other = await new_account(client, "10", sender="+14155550124")

    # when the second's key sets the first's threshold
    refused = await client.patch(f"/v1/accounts/{account_id}", headers=other, json={"low_balance_threshold": "50"})

    # then it is a 404 and the threshold is unchanged
    assert refused.status == 404
    assert (await (await client.get(f"/v1/accounts/{account_id}", headers=own)).json())["low_balance_threshold"] == "0"
