"""Every list of the API, each filter, paging (also while rows are inserted) and the tenant who tries another's,
on SQLite and PostgreSQL."""

import threading
from datetime import UTC, datetime, timedelta

import pytest

from intake.app import init_app
from shared.ids import new_id
from shared.ledger import accounts
from shared.models import (
    Account,
    Campaign,
    CampaignRecipient,
    DunningRun,
    DunningStep,
    Message,
    OptOut,
    Payment,
    PhoneNumber,
    User,
)

OPERATOR = {"Authorization": "Bearer test-operator-key-0123456789"}
DAY = datetime(2026, 11, 2, 15, 0, tzinfo=UTC)
SENDER, TOLL_FREE, SHORT_CODE = "+14155550000", "+18005550000", "12345"
ANN, BO = "+14155550101", "+14155550102"


def _account(session, name: str) -> tuple[str, dict]:
    account, key = accounts.create_account(
        session, name=name, timezone="UTC", plan_monthly_credits=0, plan_cycle="monthly", plan_rollover="none",
        overdraft=accounts.Overdraft("prepaid"), low_balance_threshold=0, now=DAY)
    return account.id, {"Authorization": f"Bearer {key}"}


def _message(session, account_id: str, *, direction="outbound", status="delivered", campaign_id=None, user_id=None,
             to=ANN, from_=SENDER, day=0) -> str:
    message = Message(id=new_id("msg"), account_id=account_id, direction=direction, status=status,
                      campaign_id=campaign_id, user_id=user_id, to=to, from_=from_, body="Open house at 2",
                      created_at=DAY + timedelta(days=day), updated_at=DAY + timedelta(days=day))
    session.add(message)
    session.flush()
    return message.id


@pytest.fixture
def world(database) -> dict:
    """Two accounts: Acme Realty with users, numbers, a campaign, messages both ways, opt-outs and payments, and
    Grace Church with a little of each (what Acme's key must never see)."""
    with database.unit_of_work() as session:
        acme, acme_key = _account(session, "Acme Realty")
        grace, grace_key = _account(session, "Grace Church")
        ann = User(id=new_id("user"), account_id=acme, name="Ann", email="ann@acme.test", role="user")
        boss = User(id=new_id("user"), account_id=acme, name="Olive", email="olive@acme.test", role="owner")
        session.add_all([ann, boss, User(id=new_id("user"), account_id=grace, name="Gus", email="g@grace.test",
                                         role="user")])
        session.add_all([PhoneNumber(account_id=acme, phone=SENDER, type="long_code"),
                         PhoneNumber(account_id=acme, phone=TOLL_FREE, type="toll_free"),
                         PhoneNumber(account_id=acme, phone="+14155550009", type="long_code", released_at=DAY),
                         PhoneNumber(account_id=grace, phone="+14155550077", type="long_code")])
        campaign = Campaign(id=new_id("cmp"), account_id=acme, name="Open house", from_=SENDER, status="running",
                            recipients=4, credits_estimated=2000, send_at=DAY, created_at=DAY, updated_at=DAY)
        quiet = Campaign(id=new_id("cmp"), account_id=acme, name="Later", from_=SENDER, status="paused",
                         recipients=0, send_at=DAY, created_at=DAY + timedelta(days=3), updated_at=DAY)
        done = Campaign(id=new_id("cmp"), account_id=acme, name="Last week", from_=SENDER, status="running",
                        recipients=0, send_at=DAY, created_at=DAY + timedelta(hours=1), updated_at=DAY,
                        completed_at=DAY + timedelta(hours=2))
        session.add_all([campaign, quiet, done, Campaign(id=new_id("cmp"), account_id=grace, name="Choir", from_=SENDER,
                                                   status="running", send_at=DAY, created_at=DAY, updated_at=DAY)])
        session.add_all([CampaignRecipient(campaign_id=campaign.id, position=n, to=to, fields={"name": name},
                                           skip_reason=reason)
                         for n, (to, name, reason) in enumerate([(ANN, "Ann", None), (BO, "Bo", None),
                                                                 ("+14155550103", "Cy", "opted_out"),
                                                                 ("+14155550104", "Di", None),
                                                                 (ANN, "Ann again", "duplicate")])])
        session.flush()
        messages = {
            "delivered": _message(session, acme, campaign_id=campaign.id, to=ANN, day=0),
            "scheduled": _message(session, acme, status="scheduled", campaign_id=campaign.id, to=BO, day=1),
            "ann_sent": _message(session, acme, status="sent", user_id=ann.id, to=BO, day=2),
            "toll_free": _message(session, acme, status="failed", from_=TOLL_FREE, to=BO, day=3),
            "reply": _message(session, acme, direction="inbound", status="received", to=SENDER, from_=ANN, day=4),
            "short_code": _message(session, acme, status="queued", from_=SHORT_CODE, to=ANN, day=5),
            "grace": _message(session, grace, to=ANN, day=1),
            "grace_reply": _message(session, grace, direction="inbound", status="received", to="+14155550077",
                                    from_=ANN, day=2),
        }
        session.add_all([OptOut(account_id=acme, phone=ANN, source="stop_keyword", created_at=DAY),
                         OptOut(account_id=acme, phone=BO, source="api", created_at=DAY + timedelta(days=2)),
                         OptOut(account_id=grace, phone=ANN, source="api", created_at=DAY)])
        payments = {}
        for name, account_id, credits, source, status, day in [
                ("bought", acme, 100_000, "api", "succeeded", 0), ("declined", acme, 500_000, "api", "declined", 1),
                ("recharge", acme, 100_000, "auto_recharge", "succeeded", 2), ("bill", acme, 0, "dunning", "pending", 3),
                ("grace", grace, 100_000, "api", "succeeded", 0)]:
            payments[name] = new_id("pay")
            session.add(Payment(id=payments[name], account_id=account_id, source=source, idempotency_key=name,
                                credits=credits, amount_cents=credits // 100, currency="usd",
                                payment_method="pm_card_visa", status=status, created_at=DAY + timedelta(days=day),
                                updated_at=DAY))
        runs = [new_id("dun") for _ in range(3)]
        session.add_all([DunningRun(id=run_id, account_id=acme, reason="month_end", references=[], amount_cents=500,
                                    currency="usd", steps=[], site="default", final_action="suspend", status="exhausted",
                                    started_at=DAY + timedelta(days=n)) for n, run_id in enumerate(runs)])
        session.flush()
        session.add(DunningStep(run_id=runs[0], step=0, email_status="sent", started_at=DAY))
        session.get(Account, grace).balance = -5_000
        session.get(Account, grace).status = "locked"
        return {"acme": acme, "grace": grace, "acme_key": acme_key, "grace_key": grace_key, "ann": ann.id,
                "boss": boss.id, "campaign": campaign.id, "quiet": quiet.id, "done": done.id, "messages": messages,
                "payments": payments, "runs": runs}


@pytest.fixture
async def client(aiohttp_client, settings, database, fake_broker):
    return await aiohttp_client(init_app(settings, database=database, broker=fake_broker))


async def every_page(client, path: str, headers: dict, params: dict | None = None, limit: int = 2) -> list[dict]:
    """Every row of a list, page by page (`limit` rows a page), failing on a page that is not a 200."""
    rows, cursor = [], None
    while True:
        query = {**(params or {}), "limit": str(limit), **({"cursor": cursor} if cursor else {})}
        response = await client.get(path, params=query, headers=headers)
        assert response.status == 200, await response.text()
        page = await response.json()
        assert len(page["data"]) <= limit
        rows += page["data"]
        cursor = page["next_cursor"]
        if cursor is None:
            return rows


# --- messages ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("params", "expected"), [
    ({}, ["short_code", "reply", "toll_free", "ann_sent", "scheduled", "delivered"]),
    ({"direction": "inbound"}, ["reply"]),
    ({"direction": "outbound"}, ["short_code", "toll_free", "ann_sent", "scheduled", "delivered"]),
    ({"status": "scheduled"}, ["scheduled"]),
    ({"status": "received"}, ["reply"]),
    ({"campaign_id": "{campaign}"}, ["scheduled", "delivered"]),
    ({"user_id": "{ann}"}, ["ann_sent"]),
    ({"to": BO}, ["toll_free", "ann_sent", "scheduled"]),
    ({"to": " 14155550102"}, ["toll_free", "ann_sent", "scheduled"]),  # a `+` not escaped arrives as a space
    ({"to": "\u200f+14155550102"}, ["toll_free", "ann_sent", "scheduled"]),  # as a send takes it: a mark before it
    ({"to": "+\u0661\u0664\u0661\u0665\u0665\u0665\u0665\u0660\u0661\u0660\u0662"},  # Arabic-Indic digits
     ["toll_free", "ann_sent", "scheduled"]),
    ({"from": TOLL_FREE}, ["toll_free"]),
    ({"from": ANN}, ["reply"]),
    ({"from": SHORT_CODE}, ["short_code"]),
    ({"created_after": (DAY + timedelta(days=2)).isoformat()}, ["short_code", "reply", "toll_free", "ann_sent"]),
    ({"created_before": (DAY + timedelta(days=2)).isoformat()}, ["scheduled", "delivered"]),
    ({"created_after": (DAY + timedelta(days=1)).isoformat(), "created_before": (DAY + timedelta(days=3)).isoformat(),
      "to": BO}, ["ann_sent", "scheduled"]),
    ({"direction": "outbound", "status": "failed", "from": TOLL_FREE}, ["toll_free"]),
])
async def test_messages_are_found_by_each_filter_newest_first(client, world, params, expected):
    # given Acme's six messages (a reply among them) and Grace's two
    query = {name: value.format(**world) for name, value in params.items()}

    # when Acme lists its messages with the filter, page by page
    rows = await every_page(client, "/v1/messages", world["acme_key"], query)

    # then exactly the matching ones come back, newest first
    assert [row["id"] for row in rows] == [world["messages"][name] for name in expected]
    reply = next((row for row in rows if row["id"] == world["messages"]["reply"]), None)
    if reply is not None:
        assert (reply["direction"], reply["status"], reply["from"]) == ("inbound", "received", ANN)


async def test_the_operator_lists_an_accounts_messages_by_naming_it(client, world):
    rows = await every_page(client, "/v1/messages", OPERATOR, {"account_id": world["grace"], "direction": "inbound"})

    assert [row["id"] for row in rows] == [world["messages"]["grace_reply"]]
    missing = await client.get("/v1/messages", headers=OPERATOR)
    assert missing.status == 422 and "account_id" in (await missing.json())["errors"]


@pytest.mark.parametrize(("params", "field"), [
    ({"direction": "sideways"}, "direction"), ({"status": "lost"}, "status"), ({"to": "555"}, "to"),
    ({"created_after": "yesterday"}, "created_after"), ({"created_before": "2026-11-02T10:00:00"}, "created_before"),
    ({"colour": "red"}, "colour"), ({"cursor": "bm90LW91cnM"}, "cursor"), ({"limit": "0"}, "limit"),
])
async def test_a_bad_or_unknown_filter_is_a_422_naming_it(client, world, params, field):
    response = await client.get("/v1/messages", params=params, headers=world["acme_key"])

    assert response.status == 422 and response.content_type == "application/problem+json"
    assert field in (await response.json())["errors"]


async def test_paging_while_messages_arrive_lists_each_message_once_and_skips_none(client, world, database):
    # given 25 more messages of Acme's (31 in all)
    with database.unit_of_work() as session:
        for n in range(25):
            _message(session, world["acme"], to=ANN, day=10 + n)
    with database.unit_of_work() as session:
        before = {message.id for message in session.query(Message).filter_by(account_id=world["acme"])}

    # when Acme pages through them 4 at a time while 3 new messages (and one of Grace's) land before each page
    seen, cursor, arrived = [], None, set()
    while True:
        with database.unit_of_work() as session:
            arrived |= {_message(session, world["acme"], to=BO, day=40) for _ in range(3)}
            _message(session, world["grace"], day=40)
        query = {"limit": "4", **({"cursor": cursor} if cursor else {})}
        page = await (await client.get("/v1/messages", params=query, headers=world["acme_key"])).json()
        seen += [row["id"] for row in page["data"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break

    # then every message that was there is listed exactly once, nothing is listed twice, nothing of Grace's
    assert len(seen) == len(set(seen))
    assert before <= set(seen) <= before | arrived


async def test_a_cursor_is_good_only_for_the_key_and_the_filters_that_were_given_it(client, world):
    # given a cursor of Acme's message list, filtered to Ann
    first = await (await client.get("/v1/messages", params={"limit": "1", "to": ANN},
                                    headers=world["acme_key"])).json()
    cursor = first["next_cursor"]
    assert cursor is not None

    # when it is used by Grace's key, by Acme's without the filter or with another, and by Acme's as it was given
    grace = await client.get("/v1/messages", params={"cursor": cursor}, headers=world["grace_key"])
    unfiltered = await client.get("/v1/messages", params={"cursor": cursor}, headers=world["acme_key"])
    other_filter = await client.get("/v1/messages", params={"cursor": cursor, "to": BO}, headers=world["acme_key"])
    same = await client.get("/v1/messages", params={"cursor": cursor, "to": ANN, "limit": "5"},
                            headers=world["acme_key"])

    # then only the list it came from (its page size aside) takes it; the others are a 422 naming the cursor
    assert [response.status for response in (grace, unfiltered, other_filter, same)] == [422, 422, 422, 200]
    assert (await grace.json())["errors"] == {"cursor": "is not valid"}


async def test_paging_while_another_writer_inserts_without_pause_lists_each_message_once(client, world, database):
    # given 30 more messages of Acme's, and a writer that keeps adding messages to Acme and Grace meanwhile
    with database.unit_of_work() as session:
        for n in range(30):
            _message(session, world["acme"], to=ANN, day=10 + n)
    with database.unit_of_work() as session:
        before = {message.id for message in session.query(Message).filter_by(account_id=world["acme"])}
    stop, arrived = threading.Event(), set()

    def writer() -> None:
        while not stop.is_set():
            with database.unit_of_work() as session:
                arrived.add(_message(session, world["acme"], to=BO, day=50))
                _message(session, world["grace"], day=50)

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        # when Acme pages through its messages 3 at a time
        seen = [row["id"] for row in await every_page(client, "/v1/messages", world["acme_key"], limit=3)]
    finally:
        stop.set()
        thread.join()

    # then each message that was there is listed exactly once, and nothing else but what the writer added
    assert len(seen) == len(set(seen))
    assert before <= set(seen) <= before | arrived


# --- campaigns and their recipients --------------------------------------------------------------------------


@pytest.mark.parametrize(("params", "expected"), [
    ({}, ["quiet", "campaign", "done"]),
    ({"status": "running"}, ["campaign"]),
    ({"status": "completed"}, ["done"]),
    ({"status": "paused"}, ["quiet"]),
    ({"created_after": (DAY + timedelta(days=1)).isoformat()}, ["quiet"]),
    ({"created_before": (DAY + timedelta(days=1)).isoformat()}, ["campaign", "done"]),
])
async def test_campaigns_are_listed_by_status_and_creation_with_their_progress(client, world, params, expected):
    rows = await every_page(client, "/v1/campaigns", world["acme_key"], params, limit=1)

    assert [row["id"] for row in rows] == sorted((world[name] for name in expected), reverse=True)
    if "campaign" in expected:
        shown = next(row for row in rows if row["id"] == world["campaign"])
        assert (shown["counts"]["delivered"], shown["counts"]["scheduled"], shown["skip_reasons"]) == (
            1, 1, {"opted_out": 1, "duplicate": 1})


@pytest.mark.parametrize(("params", "expected"), [
    ({}, [(ANN, "skipped", "duplicate"), ("+14155550104", "pending", None), ("+14155550103", "skipped", "opted_out"),
          (BO, "scheduled", None), (ANN, "delivered", None)]),
    ({"status": "delivered"}, [(ANN, "delivered", None)]),
    ({"status": "scheduled"}, [(BO, "scheduled", None)]),
    ({"status": "pending"}, [("+14155550104", "pending", None)]),
    ({"status": "skipped"}, [(ANN, "skipped", "duplicate"), ("+14155550103", "skipped", "opted_out")]),
    ({"skip_reason": "opted_out"}, [("+14155550103", "skipped", "opted_out")]),
    ({"skip_reason": "duplicate"}, [(ANN, "skipped", "duplicate")]),
])
async def test_a_campaigns_recipients_show_where_each_is_and_why_one_is_skipped(client, world, params, expected):
    rows = await every_page(client, f"/v1/campaigns/{world['campaign']}/recipients", world["acme_key"], params)

    assert [(row["to"], row["status"], row["skip_reason"]) for row in rows] == expected
    messages = {(row["to"], row["skip_reason"]): row["message_id"] for row in rows}
    if (ANN, None) in messages:  # the message went to the first; the duplicate has none of its own
        assert messages[ANN, None] == world["messages"]["delivered"]
    if (ANN, "duplicate") in messages:
        assert messages[ANN, "duplicate"] is None


# --- an account's purchases, payments, opt-outs, numbers and users -------------------------------------------


@pytest.mark.parametrize(("path", "params", "expected"), [
    ("purchases", {}, ["recharge", "declined", "bought"]),
    ("payments", {}, ["bill", "recharge", "declined", "bought"]),
    ("payments", {"status": "succeeded"}, ["recharge", "bought"]),
    ("purchases", {"status": "declined"}, ["declined"]),
    ("payments", {"source": "dunning"}, ["bill"]),
    ("purchases", {"source": "auto_recharge"}, ["recharge"]),
    ("payments", {"created_after": (DAY + timedelta(days=1)).isoformat(),
                  "created_before": (DAY + timedelta(days=3)).isoformat()}, ["recharge", "declined"]),
])
async def test_purchases_and_payments_are_listed_by_status_source_and_creation(client, world, path, params, expected):
    rows = await every_page(client, f"/v1/accounts/{world['acme']}/{path}", world["acme_key"], params)

    assert [row["id"] for row in rows] == sorted((world["payments"][name] for name in expected), reverse=True)


@pytest.mark.parametrize(("params", "expected"), [
    ({}, [BO, ANN]), ({"source": "api"}, [BO]), ({"phone": ANN}, [ANN]),
    ({"created_after": (DAY + timedelta(days=1)).isoformat()}, [BO]),
    ({"created_before": (DAY + timedelta(days=1)).isoformat()}, [ANN]),
])
async def test_opt_outs_are_listed_by_source_phone_and_creation(client, world, params, expected):
    rows = await every_page(client, "/v1/opt-outs", world["acme_key"], params, limit=1)

    assert [row["phone"] for row in rows] == expected


@pytest.mark.parametrize(("params", "expected"), [
    ({}, [TOLL_FREE, SENDER]), ({"type": "toll_free"}, [TOLL_FREE]), ({"released": "true"}, ["+14155550009"]),
    ({"released": "false", "type": "long_code"}, [SENDER]),
])
async def test_numbers_are_listed_by_type_and_released(client, world, params, expected):
    rows = await every_page(client, f"/v1/accounts/{world['acme']}/numbers", world["acme_key"], params, limit=1)

    assert [row["phone"] for row in rows] == expected


@pytest.mark.parametrize(("params", "expected"), [({}, ["boss", "ann"]), ({"role": "user"}, ["ann"]),
                                                  ({"role": "admin"}, [])])
async def test_users_are_listed_by_role(client, world, params, expected):
    rows = await every_page(client, f"/v1/accounts/{world['acme']}/users", world["acme_key"], params, limit=1)

    assert [row["id"] for row in rows] == sorted((world[name] for name in expected), reverse=True)


async def test_dunning_runs_page_newest_first_with_their_steps(client, world):
    rows = await every_page(client, f"/v1/accounts/{world['acme']}/dunning/runs", world["acme_key"], limit=2)

    assert [row["id"] for row in rows] == sorted(world["runs"], reverse=True)
    assert [[step["email"] for step in row["steps"]] for row in rows if row["id"] == world["runs"][0]] == [["sent"]]


# --- accounts (operator) --------------------------------------------------------------------------------------


@pytest.mark.parametrize(("params", "expected"), [
    ({}, ["grace", "acme"]), ({"q": "realty"}, ["acme"]), ({"q": "GRACE ch"}, ["grace"]), ({"q": "%"}, []),
    ({"status": "locked"}, ["grace"]), ({"status": "active"}, ["acme"]), ({"locked": "true"}, ["grace"]),
    ({"locked": "false"}, ["acme"]), ({"negative": "true"}, ["grace"]), ({"negative": "false"}, ["acme"]),
])
async def test_the_operator_finds_accounts_by_name_state_lock_and_negative_balance(client, world, params, expected):
    rows = await every_page(client, "/v1/accounts", OPERATOR, params, limit=1)

    assert [row["id"] for row in rows] == sorted((world[name] for name in expected), reverse=True)
    if "grace" in expected:
        assert next(row for row in rows if row["id"] == world["grace"])["balance"] == "-5"


# --- another tenant -------------------------------------------------------------------------------------------


async def test_another_account_key_lists_only_its_own_and_gets_404_for_acmes(client, world):
    # given Grace's key
    grace = world["grace_key"]

    # when it lists the top-level lists, it sees only Grace's rows
    assert {row["id"] for row in await every_page(client, "/v1/messages", grace)} == {
        world["messages"]["grace"], world["messages"]["grace_reply"]}
    assert world["campaign"] not in {row["id"] for row in await every_page(client, "/v1/campaigns", grace)}
    assert [row["phone"] for row in await every_page(client, "/v1/opt-outs", grace)] == [ANN]
    for params in ({"campaign_id": world["campaign"]}, {"user_id": world["ann"]}):  # Acme's campaign, Acme's user
        assert await every_page(client, "/v1/messages", grace, params) == []

    # and naming Acme, or one of Acme's resources, answers 404 as if it did not exist
    acme = world["acme"]
    for path, params in [("/v1/messages", {"account_id": acme}), ("/v1/campaigns", {"account_id": acme}),
                         ("/v1/opt-outs", {"account_id": acme}), (f"/v1/accounts/{acme}/dunning/runs", {}),
                         (f"/v1/campaigns/{world['campaign']}/recipients", {}),
                         (f"/v1/accounts/{acme}/purchases", {}), (f"/v1/accounts/{acme}/payments", {}),
                         (f"/v1/accounts/{acme}/numbers", {}), (f"/v1/accounts/{acme}/users", {}),
                         (f"/v1/accounts/{acme}/transactions", {}), (f"/v1/accounts/{acme}/events", {})]:
        response = await client.get(path, params=params, headers=grace)
        assert response.status == 404, (path, await response.text())

    # and the accounts list is the operator's alone
    assert (await client.get("/v1/accounts", headers=grace)).status == 403
