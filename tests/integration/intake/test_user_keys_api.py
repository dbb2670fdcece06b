"""Users act as themselves: a user's own API key sends charged to that user's credits, a user below zero is
locked (423) while an admin still sends from the pool, and the low-credit email reaches that user.

The web app, the send and settle actors (a real dramatiq Worker on fakeredis) and the in-process Twilio
simulator, on SQLite and on a real PostgreSQL; emails land in the project's file outbox.
"""


import pytest
from sqlalchemy import select

from intake.app import init_app
from shared.email import FileOutbox
from shared.ledger.verify import verify
from shared.models import Message, User
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
ONE_SEGMENT = "Choir at 7"
TWO_SEGMENTS = "x" * 200


def bearer(key: str) -> dict:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture
def outbox(tmp_path):
    return FileOutbox(tmp_path / "outbox")


@pytest.fixture
def worker(database, gateways, fake_broker, outbox):  # noqa: F811
    with in_process_worker(database, gateways, fake_broker, outbox) as workers:
        yield workers


@pytest.fixture
async def client(aiohttp_client, settings, database, fake_broker):
    return await aiohttp_client(init_app(settings, database=database, broker=fake_broker))


async def post(client, path: str, headers: dict, body: dict, status: int = 201) -> dict:
    response = await client.post(path, headers=headers, json=body)
    assert response.status == status, await response.text()
    return await response.json()


async def new_team(client) -> dict:
    """An account with 10 purchased credits, a 0.5-credit low-credit threshold and a sender number; an owner, an
    admin and a user (Uma) holding 1.5 of the credits as her own; a key each for the admin and Uma."""
    created = await post(client, "/v1/accounts", OPERATOR, {
        "name": "Grace Church", "timezone": "America/Chicago", "overdraft": {"policy": "prepaid"},
        "low_balance_threshold": "0.5", "plan": {"monthly_credits": "0", "cycle": "monthly", "rollover": "none"}})
    account_id, account_key = created["id"], bearer(created["api_key"])
    await post(client, f"/v1/accounts/{account_id}/grants", OPERATOR, {"credits": "10", "kind": "purchase"})
    await post(client, f"/v1/accounts/{account_id}/numbers", account_key, {"phone": SENDER, "type": "long_code"})
    team = {"account_id": account_id, "account_key": account_key}
    for role, name in (("owner", "Olive"), ("admin", "Ana"), ("user", "Uma")):
        user = await post(client, f"/v1/accounts/{account_id}/users", account_key, {
            "name": name, "email": f"{name.lower()}@example.com", "role": role})
        team[role] = user["id"]
    patched = await client.patch(f"/v1/accounts/{account_id}/users/{team['user']}", headers=account_key,
                                 json={"total_credits": "1.5"})
    assert patched.status == 200, await patched.text()
    for role in ("admin", "user"):
        key = await post(client, f"/v1/accounts/{account_id}/api-keys", account_key,
                         {"name": f"{role}'s phone", "user_id": team[role]})
        assert (key["scope"], key["user_id"]) == ("user", team[role])
        team[f"{role}_key"] = bearer(key["key"])
    return team


async def send(client, key: dict, body: str = ONE_SEGMENT, **fields):
    return await client.post("/v1/messages", headers=key, json={"to": "+14155550100", "from": SENDER, "body": body,
                                                               **fields})


def deliver(database, fake_broker, worker, message_id: str, *, segments: int) -> None:
    """The send job takes it to Twilio, Twilio reports it delivered with `segments`, the settle job (the sweeper's)
    charges it, and the job of the low-credit emails it wrote sends them."""
    fake_broker.join("send", timeout=10_000)
    report(database, message_id, "delivered", segments=segments)
    worker.settling.settle_message.send(message_id)
    fake_broker.join("settle", timeout=10_000)
    fake_broker.join("billing", timeout=10_000)


async def wallets(client, team: dict) -> tuple[str, str]:
    """(the pool's available credits, Uma's own total credits)"""
    balance = await (await client.get(f"/v1/accounts/{team['account_id']}/balance", headers=team["account_key"])).json()
    return balance["pool_available"], next(user["total_credits"] for user in balance["users"]
                                           if user["id"] == team["user"])


async def test_a_user_keys_send_is_charged_to_that_user_locks_it_below_zero_and_the_admin_still_sends(
        client, database, fake_broker, worker, outbox):
    # given a team whose user Uma holds 1.5 credits of her own, and her own key
    team = await new_team(client)
    assert await wallets(client, team) == ("8.5", "1.5")

    # when Uma's key sends a two-segment text: her credits cannot pay it, so 402 (as an account gets)
    refused = await send(client, team["user_key"], TWO_SEGMENTS)
    assert refused.status == 402, await refused.text()
    assert ((await refused.json())["available"], (await refused.json())["required"]) == ("1.5", "2")

    # when Uma's key sends a one-segment text, naming no user, and Twilio counts two segments (the race)
    accepted = await send(client, team["user_key"])
    assert accepted.status == 202, await accepted.text()
    message_id = (await accepted.json())["id"]
    deliver(database, fake_broker, worker, message_id, segments=2)

    # then it is Uma's message, charged in full to her credits (below zero), and the pool is untouched
    with database.unit_of_work() as session:
        assert session.execute(select(Message.user_id, Message.credits_charged)
                               .where(Message.id == message_id)).one() == (team["user"], 2000)
        assert session.scalar(select(User.balance).where(User.id == team["user"])) == -500
        assert verify(session) == []
    assert await wallets(client, team) == ("8.5", "-0.5")
    # and the low-credit email reached Uma (and the owner), about her own credits
    mailed = {message["To"]: message for message in outbox.messages()}
    assert sorted(mailed) == ["olive@example.com", "uma@example.com"]
    assert "Your credits are running low" in mailed["uma@example.com"].get_content()
    assert "Uma's own credits are running low" in mailed["olive@example.com"].get_content()

    # when Uma sends again: she is locked until given more credits (423), not merely short of them
    locked = await send(client, team["user_key"])
    assert locked.status == 423, await locked.text()
    assert "locked" in (await locked.json())["detail"]

    # while the admin of the same account still sends, from the shared pool
    shared = await send(client, team["admin_key"])
    assert shared.status == 202, await shared.text()
    deliver(database, fake_broker, worker, (await shared.json())["id"], segments=1)
    assert await wallets(client, team) == ("7.5", "-0.5")

    # when the admin gives Uma 1 credit: 0.5 repays her debt and she may send again
    given = await client.patch(f"/v1/accounts/{team['account_id']}/users/{team['user']}", headers=team["admin_key"],
                               json={"total_credits": "1"})
    assert given.status == 200, await given.text()
    assert await wallets(client, team) == ("6", "1")
    again = await send(client, team["user_key"])
    assert again.status == 202, await again.text()
    with database.unit_of_work() as session:
        assert verify(session) == []


async def test_a_user_keys_balance_shows_its_own_wallet_and_the_pool_not_its_colleagues(client):
    # given the team, where Uma holds credits of her own and a second user, Ben, holds some too
    team = await new_team(client)
    account_id = team["account_id"]
    ben = await post(client, f"/v1/accounts/{account_id}/users", team["account_key"], {
        "name": "Ben", "email": "ben@example.com", "role": "user"})
    patched = await client.patch(f"/v1/accounts/{account_id}/users/{ben['id']}", headers=team["account_key"],
                                 json={"total_credits": "2"})
    assert patched.status == 200, await patched.text()

    # when Uma's key and the account's key read the balance
    uma = await (await client.get(f"/v1/accounts/{account_id}/balance", headers=team["user_key"])).json()
    whole = await (await client.get(f"/v1/accounts/{account_id}/balance", headers=team["account_key"])).json()

    # then Uma sees her own credits and lots and the pool's, nothing of Ben's; the account's key sees everyone's
    assert [user["id"] for user in uma["users"]] == [team["user"]]
    assert {lot["user_id"] for lot in uma["lots"]} <= {None, team["user"]}
    assert ben["id"] in {user["id"] for user in whole["users"]}
    assert ben["id"] in {lot["user_id"] for lot in whole["lots"]}


async def test_a_user_key_cannot_send_as_another_user_nor_read_their_messages(client, database, fake_broker):
    # given a team, and a text the admin sent with her own key
    team = await new_team(client)
    admins = await send(client, team["admin_key"])
    assert admins.status == 202, await admins.text()
    admins_id = (await admins.json())["id"]

    # when Uma's key names the admin as the sender
    refused = await send(client, team["user_key"], user_id=team["admin"])

    # then it is refused and nothing is stored for her
    assert refused.status == 403, await refused.text()
    with database.unit_of_work() as session:
        assert session.scalars(select(Message.user_id)).all() == [team["admin"]]

    # and Uma sees her own messages and transactions only; the admin and the account key see them all
    own = (await (await send(client, team["user_key"])).json())["id"]
    assert (await client.get(f"/v1/messages/{own}", headers=team["user_key"])).status == 200
    assert (await client.get(f"/v1/messages/{admins_id}", headers=team["user_key"])).status == 404
    assert (await client.get(f"/v1/messages/{own}", headers=team["admin_key"])).status == 200
    transactions = f"/v1/accounts/{team['account_id']}/transactions"
    hers = (await (await client.get(transactions, headers=team["user_key"])).json())["data"]
    everyone = (await (await client.get(transactions, headers=team["account_key"])).json())["data"]
    assert hers and {entry["user_id"] for entry in hers} == {team["user"]}
    assert len(everyone) > len(hers)


async def test_a_user_keys_campaign_draws_on_that_users_own_credits(client, database, fake_broker, worker):
    # given a team whose user Uma holds 1.5 credits of her own
    team = await new_team(client)

    # when Uma's key starts a campaign to one recipient
    started = await post(client, "/v1/campaigns", team["user_key"], {
        "name": "Choir", "from": SENDER, "body": ONE_SEGMENT, "quiet_hours": {"start": "00:00", "end": "00:00"},
        "recipients": [{"to": "+14155550100"}]}, status=202)
    fake_broker.join("campaigns", timeout=10_000)

    # then the campaign and its message are hers, and its credit is held from her credits, not the pool
    view = await (await client.get(f"/v1/campaigns/{started['id']}", headers=team["user_key"])).json()
    assert view["user_id"] == team["user"]
    with database.unit_of_work() as session:
        assert session.scalars(select(Message.user_id).where(Message.campaign_id == started["id"])).all() == [
            team["user"]]
        assert session.scalar(select(User.held).where(User.id == team["user"])) == 1000
    assert await wallets(client, team) == ("8.5", "1.5")
    # and the admin, who may read every campaign, sees it; another account's owner does not
    assert (await client.get(f"/v1/campaigns/{started['id']}", headers=team["admin_key"])).status == 200
    other = await post(client, "/v1/accounts", OPERATOR, {"name": "Other"})
    assert (await client.get(f"/v1/campaigns/{started['id']}", headers=bearer(other["api_key"]))).status == 404


async def test_a_user_key_cannot_read_nor_steer_another_users_voice_broadcast(client, database, fake_broker):
    # given a team (Uma holding 5 credits of her own: a minute costs 2), a voice broadcast the admin started with her
    # own key, and one Uma started with hers
    team = await new_team(client)
    patched = await client.patch(f"/v1/accounts/{team['account_id']}/users/{team['user']}",
                                 headers=team["account_key"], json={"total_credits": "5"})
    assert patched.status == 200, await patched.text()
    broadcast = {"name": "Reminder", "from": SENDER, "say": "Choir at seven",
                 "quiet_hours": {"start": "00:00", "end": "00:00"}, "recipients": [{"to": "+14155550100"}]}
    admins = await post(client, "/v1/voice-broadcasts", team["admin_key"], broadcast, status=202)
    hers = await post(client, "/v1/voice-broadcasts", team["user_key"], broadcast, status=202)

    # when Uma's key reads, pauses, resumes and cancels the admin's broadcast
    url = f"/v1/voice-broadcasts/{admins['id']}"
    answers = [await client.get(url, headers=team["user_key"])]
    for verb in ("pause", "resume", "cancel"):
        answers.append(await client.post(f"{url}/{verb}", headers=team["user_key"]))

    # then each is a 404, as for a broadcast that does not exist, and the admin's broadcast still runs
    assert [answer.status for answer in answers] == [404] * 4
    view = await (await client.get(url, headers=team["admin_key"])).json()
    assert view["status"] == "running"
    # and Uma still reads and steers her own, while the admin, who may act on every broadcast, steers hers too
    assert (await client.get(f"/v1/voice-broadcasts/{hers['id']}", headers=team["user_key"])).status == 200
    paused = await client.post(f"/v1/voice-broadcasts/{hers['id']}/pause", headers=team["user_key"])
    assert (paused.status, (await paused.json())["status"]) == (200, "paused")
    canceled = await client.post(f"{url}/cancel", headers=team["admin_key"])
    assert (canceled.status, (await canceled.json())["status"]) == (200, "canceled")
