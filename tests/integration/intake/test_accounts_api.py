"""The accounts, grants, balance, transactions, users and numbers endpoints over HTTP."""

import asyncio
import threading
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from intake.app import init_app
from shared.ledger import book
from shared.messaging.rates import default_rate_card
from shared.money import format_credits

OPERATOR = {"Authorization": "Bearer test-operator-key-0123456789"}
ACCOUNT_BODY = {"name": "Acme Realty", "timezone": "America/New_York",
                "plan": {"monthly_credits": "100", "cycle": "monthly", "rollover": "fifo_12m"},
                "overdraft": {"policy": "prepaid"}, "low_balance_threshold": "5"}
NO_PLAN = {"monthly_credits": "0", "cycle": "monthly", "rollover": "none"}  # an account that starts with no credits


@pytest.fixture
async def client(aiohttp_client, settings, sqlite_database, fake_broker):
    return await aiohttp_client(init_app(settings, database=sqlite_database, broker=fake_broker))


async def create_account(client, **overrides) -> tuple[str, dict]:
    response = await client.post("/v1/accounts", json={**ACCOUNT_BODY, **overrides}, headers=OPERATOR)
    assert response.status == 201, await response.text()
    body = await response.json()
    return body["id"], {"Authorization": f"Bearer {body['api_key']}"}


async def grant(client, account_id, credits, kind, **extra) -> dict:
    response = await client.post(f"/v1/accounts/{account_id}/grants", json={"credits": credits, "kind": kind, **extra},
                                 headers=OPERATOR)
    assert response.status == 201, await response.text()
    return await response.json()


async def test_operator_creates_an_account_whose_key_sees_only_it(client):
    response = await client.post("/v1/accounts", json=ACCOUNT_BODY, headers=OPERATOR)
    assert response.status == 201
    body = await response.json()
    assert body["api_key"].startswith("cq_live_")
    assert body["plan"] == {"monthly_credits": "100", "cycle": "monthly", "rollover": "fifo_12m",
                            "next_monthly_credits": None}
    assert (body["status"], body["balance"], body["flags"]["spam"]) == ("active", "100", False)  # the first cycle
    own = {"Authorization": f"Bearer {body['api_key']}"}

    assert (await client.get(f"/v1/accounts/{body['id']}", headers=own)).status == 200
    other_id, _ = await create_account(client)
    assert (await client.get(f"/v1/accounts/{other_id}", headers=own)).status == 404
    assert (await client.get(f"/v1/accounts/{other_id}/balance", headers=own)).status == 404
    assert (await client.post("/v1/accounts", json=ACCOUNT_BODY, headers=own)).status == 403
    assert (await client.patch(f"/v1/accounts/{body['id']}", json={"name": "x"}, headers=own)).status == 403
    assert (await client.post(f"/v1/accounts/{body['id']}/grants", json={"credits": "1", "kind": "bonus"},
                              headers=own)).status == 403


@pytest.mark.parametrize(("change", "field"), [
    ({"timezone": "Mars/Olympus"}, "timezone"),
    ({"timezone": "localtime"}, "timezone"),
    ({"plan": {"monthly_credits": "10", "cycle": "weekly"}}, "plan.cycle"),
    ({"plan": {"monthly_credits": "-10"}}, "plan.monthly_credits"),
    ({"plan": {"monthly_credits": 1.5}}, "plan.monthly_credits"),
    ({"overdraft": {"policy": "prepaid", "limit": "10"}}, "overdraft.limit"),
    ({"overdraft": {"policy": "credit"}}, "overdraft.policy"),
    ({"low_balance_threshold": "0.0001"}, "low_balance_threshold"),
    ({"name": ""}, "name"),
    ({"colour": "red"}, "colour"),
])
async def test_invalid_account_fields_are_422_naming_the_field(client, change, field):
    response = await client.post("/v1/accounts", json={**ACCOUNT_BODY, **change}, headers=OPERATOR)

    assert response.status == 422
    assert response.content_type == "application/problem+json"
    assert field in (await response.json())["errors"]


async def test_creating_an_account_with_a_plan_grants_its_first_cycle_until_that_cycle_ends(client):
    # when an account on a 100-credit monthly plan is created (New York)
    response = await client.post("/v1/accounts", headers=OPERATOR, json={
        **ACCOUNT_BODY, "plan": {"monthly_credits": "100", "cycle": "monthly", "rollover": "none"}})
    created = await response.json()
    account_id, own = created["id"], {"Authorization": f"Bearer {created['api_key']}"}

    # then its 100 credits are there at once (the answer to the creation says so too), and expire when its
    # first month ends, not a month after today
    assert (response.status, created["balance"], created["available"]) == (201, "100", "100")
    balance = await (await client.get(f"/v1/accounts/{account_id}/balance", headers=own)).json()
    [lot] = balance["lots"]
    assert (balance["balance"], lot["credits"], lot["kind"]) == ("100", "100", "plan")
    granted = datetime.fromisoformat(lot["granted_at"]).astimezone(ZoneInfo("America/New_York"))
    next_month = (granted.replace(day=28) + timedelta(days=4)).replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    assert datetime.fromisoformat(lot["expires_at"]) == next_month


async def test_patch_plan_applies_next_cycle_and_spam_removes_never_expiring_credits(client):
    account_id, _ = await create_account(client)
    await grant(client, account_id, "30", "purchase")
    await grant(client, account_id, "5", "bonus")

    response = await client.patch(f"/v1/accounts/{account_id}", headers=OPERATOR, json={
        "plan": {"monthly_credits": "200"}, "overdraft": {"policy": "overdraft", "limit": "50"},
        "flags": {"spam": True}, "low_balance_threshold": "1.5"})

    assert response.status == 200
    body = await response.json()
    assert (body["plan"]["monthly_credits"], body["plan"]["next_monthly_credits"]) == ("100", "200")
    assert body["overdraft"] == {"policy": "overdraft", "limit": "50"}
    # the purchased 30 and the bonus 5 are gone; the first cycle's 100 plan (rollover) credits stay
    assert (body["flags"]["spam"], body["balance"], body["low_balance_threshold"]) == (True, "100", "1.5")
    bad = await client.patch(f"/v1/accounts/{account_id}", headers=OPERATOR, json={"flags": {"spam": "yes"}})
    assert (bad.status, list((await bad.json())["errors"])) == (422, ["flags.spam"])


async def test_grants_balance_and_transactions_newest_first_with_cursor_paging(client):
    account_id, own = await create_account(client, plan=NO_PLAN)
    lot = await grant(client, account_id, "300", "rollover", granted_at="2020-09-01T00:00:00-04:00")
    assert lot["expires_at"] == "2021-09-01T04:00:00+00:00"
    for credits in ("1", "2", "3"):
        await grant(client, account_id, credits, "purchase")
    bad = await client.post(f"/v1/accounts/{account_id}/grants", json={"credits": "0", "kind": "bonus"},
                            headers=OPERATOR)
    assert bad.status == 422

    # the rollover credits expired in 2021: the first purchase wrote their expiry, dated when they expired
    balance = await (await client.get(f"/v1/accounts/{account_id}/balance", headers=own)).json()
    assert (balance["balance"], balance["held"], balance["available"]) == ("6", "0", "6")
    assert [x["kind"] for x in balance["lots"]] == ["purchase", "purchase", "purchase"]

    first = await (await client.get(f"/v1/accounts/{account_id}/transactions?limit=3", headers=own)).json()
    assert [e["credits"] for e in first["data"]] == ["3", "2", "1"]
    assert [e["balance_after"] for e in first["data"]] == ["6", "3", "1"]
    second = await (await client.get(f"/v1/accounts/{account_id}/transactions?limit=3&cursor={first['next_cursor']}",
                                     headers=own)).json()
    assert ([e["credits"] for e in second["data"]], second["next_cursor"]) == (["-300", "300"], None)
    assert (second["data"][0]["kind"], second["data"][0]["at"]) == ("expiry", "2021-09-01T04:00:00+00:00")
    assert (await client.get(f"/v1/accounts/{account_id}/transactions?cursor=bogus", headers=own)).status == 422


async def test_grant_replayed_with_its_idempotency_key_grants_once(client):
    account_id, own = await create_account(client, plan=NO_PLAN)
    headers = {**OPERATOR, "Idempotency-Key": "grant-1"}
    first = await client.post(f"/v1/accounts/{account_id}/grants", json={"credits": "7", "kind": "bonus"},
                              headers=headers)
    again = await client.post(f"/v1/accounts/{account_id}/grants", json={"credits": "7", "kind": "bonus"},
                              headers=headers)

    assert (first.status, again.status) == (201, 201)
    assert (await first.json())["id"] == (await again.json())["id"]
    assert (await (await client.get(f"/v1/accounts/{account_id}/balance", headers=own)).json())["balance"] == "7"


async def test_users_allocations_are_capped_with_the_maximum_named_and_return_on_delete(client):
    # Given a plan of what a long code costs a month plus 100 credits (its first cycle is the pool), and a long code
    number_cost = default_rate_card().price("phone_number", country="US", sender_type="long_code")
    pool = number_cost + 100_000
    plan = {"monthly_credits": format_credits(pool), "cycle": "monthly", "rollover": "none"}
    account_id, own = await create_account(client, plan=plan)
    numbers = await client.post(f"/v1/accounts/{account_id}/numbers", json={"phone": "+14155550100",
                                                                             "type": "long_code"}, headers=own)
    assert numbers.status == 201

    owner = await client.post(f"/v1/accounts/{account_id}/users", headers=own,
                              json={"name": "Olive", "email": "o@acme.test", "role": "owner"})
    assert (await owner.json())["monthly_credits"] == "shared"
    too_much = await client.post(f"/v1/accounts/{account_id}/users", headers=own, json={
        "name": "Ursula", "email": "u@acme.test", "role": "user", "monthly_credits": "100.5"})
    assert too_much.status == 422
    assert "at most 100" in (await too_much.json())["detail"]
    created = await client.post(f"/v1/accounts/{account_id}/users", headers=own, json={
        "name": "Ursula", "email": "u@acme.test", "role": "user", "monthly_credits": "60", "phone": "+14155550101"})
    assert created.status == 201
    user_id = (await created.json())["id"]

    over = await client.patch(f"/v1/accounts/{account_id}/users/{user_id}", headers=own,
                              json={"total_credits": format_credits(pool + 1)})
    assert over.status == 422
    assert f"at most {format_credits(pool)}" in (await over.json())["detail"]
    patched = await client.patch(f"/v1/accounts/{account_id}/users/{user_id}", headers=own,
                                 json={"total_credits": "25"})
    assert (await patched.json())["total_credits"] == "25"
    balance = await (await client.get(f"/v1/accounts/{account_id}/balance", headers=own)).json()
    assert (balance["balance"], balance["pool_available"]) == (format_credits(pool), format_credits(pool - 25_000))

    deleted = await client.delete(f"/v1/accounts/{account_id}/users/{user_id}", headers=own)
    assert deleted.status == 204
    balance = await (await client.get(f"/v1/accounts/{account_id}/balance", headers=own)).json()
    assert (balance["pool_available"], [u["name"] for u in balance["users"]]) == (format_credits(pool), ["Olive"])
    assert (await client.get(f"/v1/accounts/{account_id}/users/{user_id}", headers=own)).status == 404


@pytest.mark.parametrize(("body", "field"), [
    ({"name": "A", "email": "nope", "role": "user"}, "email"),
    ({"name": "A", "email": "a@x.test", "role": "boss"}, "role"),
    ({"name": "A", "email": "a@x.test", "role": "user", "monthly_credits": "-1"}, "monthly_credits"),
    ({"name": "A", "email": "a@x.test", "role": "user", "phone": "12"}, "phone"),
    ({"name": "A", "email": "a@x.test", "role": "admin", "monthly_credits": "5"}, "monthly_credits"),
])
async def test_invalid_user_fields_are_422(client, body, field):
    account_id, own = await create_account(client)

    response = await client.post(f"/v1/accounts/{account_id}/users", json=body, headers=own)

    assert response.status == 422
    assert field in (await response.json())["errors"]


async def test_numbers_are_validated_listed_and_removed(client):
    account_id, own = await create_account(client)
    path = f"/v1/accounts/{account_id}/numbers"
    assert (await client.post(path, json={"phone": "+1 800 555 0100", "type": "toll_free"}, headers=own)).status == 201
    assert (await client.post(path, json={"phone": "+18005550100", "type": "toll_free"}, headers=own)).status == 409
    bad_type = await client.post(path, json={"phone": "+14155550102", "type": "fax"}, headers=own)
    assert "type" in (await bad_type.json())["errors"]
    bad_phone = await client.post(path, json={"phone": "555", "type": "long_code"}, headers=own)
    assert (bad_phone.status, list((await bad_phone.json())["errors"])) == (422, ["phone"])

    listed = await (await client.get(path, headers=own)).json()
    assert [(n["phone"], n["type"]) for n in listed["data"]] == [("+18005550100", "toll_free")]
    assert (await client.delete(f"{path}/%2B18005550100", headers=own)).status == 204
    assert (await client.delete(f"{path}/%2B18005550100", headers=own)).status == 404


@pytest.mark.parametrize(("phone", "number_type", "reason"), [
    ("+14155550100", "short_code", "is not a short code"),  # a long code would send at a short code's throughput
    ("1234567", "short_code", "is not a phone number"),  # seven digits: no US short code
    ("12345", "long_code", "is a short code"),
    ("+14155550100", "toll_free", "is not a toll-free number"),  # a local number billed as toll-free
    ("+18005550100", "long_code", "is a toll-free number"),  # a toll-free number at a long code's price
])
async def test_a_number_added_as_a_type_it_is_not_is_a_422_and_is_not_added(client, phone, number_type, reason):
    account_id, own = await create_account(client)
    path = f"/v1/accounts/{account_id}/numbers"

    response = await client.post(path, json={"phone": phone, "type": number_type}, headers=own)

    assert response.status == 422
    assert reason in (await response.json())["errors"]["phone"]
    assert (await (await client.get(path, headers=own)).json())["data"] == []


async def test_an_accounts_own_short_code_is_added_sent_from_and_removed(client):
    # given an account with credits and a short code of its own
    account_id, own = await create_account(client)
    path = f"/v1/accounts/{account_id}/numbers"
    added = await client.post(path, json={"phone": " 54321 ", "type": "short_code"}, headers=own)
    assert added.status == 201, await added.text()
    assert ((await added.json())["phone"], (await added.json())["type"]) == ("54321", "short_code")

    await grant(client, account_id, "100", "purchase")

    # when a text goes out from it, then it is accepted as the account's sender
    estimate = await client.post("/v1/estimate", json={"body": "Open house", "to": ["+14155550100"], "from": "54321"},
                                 headers=own)
    assert estimate.status == 200, await estimate.text()
    sent = await client.post("/v1/messages", json={"to": "+14155550100", "from": "54321", "body": "Open house"},
                             headers=own)
    assert sent.status == 202, await sent.text()
    shown = await (await client.get(f"/v1/messages/{(await sent.json())['id']}", headers=own)).json()
    assert (shown["from"], shown["status"]) == ("54321", "accepted")

    # and another account cannot send from it
    other_id, other = await create_account(client)
    refused = await client.post("/v1/messages", json={"to": "+14155550100", "from": "54321", "body": "Hi"},
                                headers=other)
    assert refused.status == 422 and "from" in (await refused.json())["errors"]

    # and it is removed by its digits
    assert (await client.delete(f"{path}/54321", headers=own)).status == 204
    assert (await (await client.get(path, headers=own)).json())["data"] == []


async def test_a_number_belongs_to_one_account_only(client):
    # given a number that account A sends from
    first, own_first = await create_account(client)
    second, own_second = await create_account(client)
    assert (await client.post(f"/v1/accounts/{first}/numbers", json={"phone": "+14155550123", "type": "long_code"},
                              headers=own_first)).status == 201

    # when account B claims it too
    response = await client.post(f"/v1/accounts/{second}/numbers", json={"phone": "+14155550123",
                                                                       "type": "long_code"}, headers=own_second)

    # then it is refused without naming the owner, and B cannot send from it
    assert response.status == 409
    assert first not in (await response.json())["detail"]
    sent = await client.post("/v1/messages", json={"to": "+14155550100", "from": "+14155550123", "body": "hi"},
                             headers=own_second)
    assert sent.status == 422


@pytest.mark.postgres
async def test_two_accounts_claiming_one_number_at_once_get_one_201_and_one_409(aiohttp_client, settings,
                                                                                postgres_database, monkeypatch):
    # given two accounts on PostgreSQL, whose claims both pass the "is it taken?" check before either inserts:
    # each waits, holding its own account's lock, until the other holds its own
    client = await aiohttp_client(init_app(settings, database=postgres_database))
    (first, own_first), (second, own_second) = await create_account(client), await create_account(client)
    both_checking = threading.Barrier(2, timeout=10)
    lock_account = book.lock_account

    def lock_and_wait_for_the_other(session, account_id):
        row = lock_account(session, account_id)
        both_checking.wait()
        return row

    monkeypatch.setattr(book, "lock_account", lock_and_wait_for_the_other)

    # when both claim +14155550123 concurrently
    number = {"phone": "+14155550123", "type": "long_code"}
    answers = await asyncio.gather(client.post(f"/v1/accounts/{first}/numbers", json=number, headers=own_first),
                                   client.post(f"/v1/accounts/{second}/numbers", json=number, headers=own_second))

    # then the database lets exactly one have it, and the other gets a conflict, not an error
    assert sorted(answer.status for answer in answers) == [201, 409]
    loser = next(answer for answer in answers if answer.status == 409)
    assert loser.content_type == "application/problem+json"
    monkeypatch.undo()
    owners = [[n["phone"] for n in (await (await client.get(f"/v1/accounts/{account}/numbers", headers=own)).json())
               ["data"]] for account, own in ((first, own_first), (second, own_second))]
    assert sorted(owners) == [[], ["+14155550123"]]


async def test_the_account_key_sets_its_threshold_and_quiet_hours_but_not_its_plan(client):
    # given an account and its own key
    account_id, own = await create_account(client)
    path = f"/v1/accounts/{account_id}"

    # when the owner sets the low-credit threshold, its quiet hours and their scope
    changed = await client.patch(path, headers=own, json={"low_balance_threshold": "25",
                                                          "quiet_hours": {"start": "09:00", "end": "20:00"},
                                                          "quiet_hours_scope": "all"})

    # then they are the account's
    assert changed.status == 200, await changed.text()
    body = await changed.json()
    assert (body["low_balance_threshold"], body["quiet_hours"], body["quiet_hours_scope"]) == (
        "25", {"start": "09:00", "end": "20:00"}, "all")

    # and the plan, flags and overdraft stay the operator's: 403, nothing changed
    refused = await client.patch(path, headers=own, json={"plan": {"monthly_credits": "1000"}, "quiet_hours": None})
    assert refused.status == 403
    assert (await (await client.get(path, headers=own)).json())["quiet_hours"] == {"start": "09:00", "end": "20:00"}

    # a bad window is a 422 naming the field; null goes back to the TCPA default
    bad = await client.patch(path, headers=own, json={"quiet_hours": {"start": "9am"}})
    assert (bad.status, list((await bad.json())["errors"])) == (422, ["quiet_hours.start"])
    reset = await client.patch(path, headers=own, json={"quiet_hours": None, "quiet_hours_scope": "automated"})
    assert ((await reset.json())["quiet_hours"], (await reset.json())["quiet_hours_scope"]) == (
        {"start": "08:00", "end": "21:00"}, "automated")


async def test_quiet_hours_are_settings_as_the_api_contract_has_them(client):
    # given an account and its own key
    account_id, own = await create_account(client)
    path = f"/v1/accounts/{account_id}"

    # when the owner sets its quiet hours and their scope under `settings`
    changed = await client.patch(path, headers=own, json={"settings": {
        "quiet_hours": {"start": "10:00", "end": "19:30"}, "quiet_hours_scope": "all"}})

    # then the account keeps to them, shown under settings (and where they were first shown)
    assert changed.status == 200, await changed.text()
    body = await (await client.get(path, headers=own)).json()
    assert (body["settings"]["quiet_hours"], body["settings"]["quiet_hours_scope"]) == (
        {"start": "10:00", "end": "19:30"}, "all")
    assert body["quiet_hours"] == body["settings"]["quiet_hours"]

    # and a bad one is a 422 naming the field under settings; null is the TCPA default again
    bad = await client.patch(path, headers=own, json={"settings": {"quiet_hours": {"start": "25:00", "end": "08:00"}}})
    assert (bad.status, list((await bad.json())["errors"])) == (422, ["settings.quiet_hours.start"])
    reset = await client.patch(path, headers=own, json={"settings": {"quiet_hours": None}})
    assert (await reset.json())["settings"]["quiet_hours"] == {"start": "08:00", "end": "21:00"}


@pytest.mark.parametrize(("change", "window"), [
    ({"start": "07:00"}, {"start": "07:00", "end": "21:00"}),
    ({"end": "22:30"}, {"start": "08:00", "end": "22:30"}),
])
async def test_one_bound_changed_on_the_default_window_keeps_the_default_other(client, change, window):
    # given a new account, on the default 08:00-21:00; when one bound is changed
    account_id, own = await create_account(client)
    changed = await client.patch(f"/v1/accounts/{account_id}", headers=own, json={"settings": {"quiet_hours": change}})

    # then the other is the default's, and the account keeps to both
    assert changed.status == 200, await changed.text()
    assert (await changed.json())["settings"]["quiet_hours"] == window
    body = await (await client.get(f"/v1/accounts/{account_id}", headers=own)).json()
    assert body["settings"]["quiet_hours"] == window


async def test_a_change_naming_one_bound_of_the_quiet_hours_keeps_the_other(client):
    # given an account whose quiet hours end at 20:00
    account_id, own = await create_account(client)
    path = f"/v1/accounts/{account_id}"
    await client.patch(path, headers=own, json={"settings": {"quiet_hours": {"start": "09:00", "end": "20:00"}}})

    # when the start alone is changed, then the end alone
    start = await client.patch(path, headers=own, json={"settings": {"quiet_hours": {"start": "07:00"}}})
    end = await client.patch(path, headers=own, json={"quiet_hours": {"end": "22:30"}})

    # then each kept the other bound as it was
    assert (await start.json())["settings"]["quiet_hours"] == {"start": "07:00", "end": "20:00"}
    assert (await end.json())["settings"]["quiet_hours"] == {"start": "07:00", "end": "22:30"}

    # and a field quiet hours do not have is a 422 naming it, with nothing changed
    bad = await client.patch(path, headers=own, json={"settings": {"quiet_hours": {"start": "06:00", "stop": "23:00"}}})
    assert (bad.status, list((await bad.json())["errors"])) == (422, ["settings.quiet_hours.stop"])
    body = await (await client.get(path, headers=own)).json()
    assert body["settings"]["quiet_hours"] == {"start": "07:00", "end": "22:30"}


async def test_an_owner_created_with_shared_monthly_credits_shares_the_pool(client):
    # given the value the API shows for owners and admins
    account_id, own = await create_account(client)

    # when an owner is created with it
    created = await client.post(f"/v1/accounts/{account_id}/users", headers=own, json={
        "name": "Olive", "email": "o@acme.test", "role": "owner", "monthly_credits": "shared"})

    # then it is accepted and shown the same way
    assert created.status == 201, await created.text()
    assert (await created.json())["monthly_credits"] == "shared"


async def test_credits_past_their_expiry_are_never_shown_even_before_anything_writes_their_expiry(client):
    # given 300 rollover credits granted in 2020 (expired since 2021) and nothing that touched the account since
    account_id, own = await create_account(client, plan=NO_PLAN)
    await grant(client, account_id, "300", "rollover", granted_at="2020-09-01T00:00:00-04:00")

    # then the account, its balance and the expiring report leave them out, and nothing was written by reading
    account = await (await client.get(f"/v1/accounts/{account_id}", headers=own)).json()
    assert (account["balance"], account["available"]) == ("0", "0")
    balance = await (await client.get(f"/v1/accounts/{account_id}/balance", headers=own)).json()
    assert (balance["balance"], balance["available"], balance["lots"], balance["expiring_end_of_month"]) == (
        "0", "0", [], "0")
    entries = await (await client.get(f"/v1/accounts/{account_id}/transactions", headers=own)).json()
    assert [e["kind"] for e in entries["data"]] == ["grant"]

    # and a send is refused for want of credits (402), as the hold would be
    number = await client.post(f"/v1/accounts/{account_id}/numbers", json={"phone": "+14155550100",
                                                                        "type": "long_code"}, headers=own)
    assert number.status == 201, await number.text()
    send = await client.post("/v1/messages", json={"to": "+14155550199", "from": "+14155550100",
                                                   "body": "Open house at 2"}, headers=own)
    assert send.status == 402, await send.text()
