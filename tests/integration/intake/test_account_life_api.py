"""Cancel, reactivate, mark spam and the account's events over HTTP: who may call them and what they answer."""

import pytest

from intake.app import init_app

OPERATOR = {"Authorization": "Bearer test-operator-key-0123456789"}
ACCOUNT_BODY = {"name": "Acme Realty", "timezone": "America/New_York",
                "plan": {"monthly_credits": "100", "cycle": "monthly", "rollover": "none"},
                "overdraft": {"policy": "prepaid"}}
SENDER, RECIPIENT = "+14155550000", "+14155550100"
NEW_PLAN = {"plan": {"monthly_credits": "200", "cycle": "monthly", "rollover": "none"}}


@pytest.fixture
async def client(aiohttp_client, settings, sqlite_database, fake_broker):
    return await aiohttp_client(init_app(settings, database=sqlite_database, broker=fake_broker))


async def create_account(client) -> tuple[str, dict]:
    response = await client.post("/v1/accounts", json=ACCOUNT_BODY, headers=OPERATOR)
    assert response.status == 201, await response.text()
    body = await response.json()
    return body["id"], {"Authorization": f"Bearer {body['api_key']}"}


async def test_a_canceled_account_shows_why_refuses_sends_with_423_and_its_key_stops_working(client):
    # given an account with a number and 100 plan credits, whose key works
    account_id, own = await create_account(client)
    assert (await client.post(f"/v1/accounts/{account_id}/numbers", json={"phone": SENDER, "type": "long_code"},
                              headers=own)).status == 201

    # when the operator cancels it
    response = await client.post(f"/v1/accounts/{account_id}/cancel", json={"reason": "closed by request"},
                                 headers=OPERATOR)

    # then it is canceled, its plan credits gone, and GET shows when and why
    assert response.status == 200
    body = await response.json()
    assert (body["status"], body["status_reason"], body["balance"]) == ("canceled", "closed by request", "0")
    shown = await (await client.get(f"/v1/accounts/{account_id}", headers=OPERATOR)).json()
    assert (shown["status"], shown["canceled_at"]) == ("canceled", body["canceled_at"]) and body["canceled_at"]
    # its key is revoked, and a send for it is refused as for a locked account, naming the reason
    assert (await client.get(f"/v1/accounts/{account_id}", headers=own)).status == 401
    send = await client.post("/v1/messages", headers=OPERATOR, json={
        "account_id": account_id, "to": RECIPIENT, "from": SENDER, "body": "hi"})
    assert send.status == 423
    assert "closed by request" in (await send.json())["detail"]
    # and canceling again answers the same account, unchanged
    again = await client.post(f"/v1/accounts/{account_id}/cancel", headers=OPERATOR)
    assert (again.status, (await again.json())["canceled_at"]) == (200, body["canceled_at"])


async def test_another_tenants_key_and_the_accounts_own_key_find_no_such_routes(client):
    account_id, own = await create_account(client)
    _, other = await create_account(client)

    for path, body in (("cancel", None), ("mark-spam", None), ("reactivate", NEW_PLAN)):
        for key in (other, own):
            response = await client.post(f"/v1/accounts/{account_id}/{path}", json=body, headers=key)
            assert response.status == 404, (path, key)
    assert (await client.get(f"/v1/accounts/{account_id}/events", headers=other)).status == 404
    shown = await (await client.get(f"/v1/accounts/{account_id}", headers=OPERATOR)).json()
    assert shown["status"] == "active"


async def test_reactivate_only_a_canceled_account_and_answer_with_a_new_key(client):
    account_id, _ = await create_account(client)
    refused = await client.post(f"/v1/accounts/{account_id}/reactivate", json=NEW_PLAN, headers=OPERATOR)
    assert refused.status == 409
    assert refused.content_type == "application/problem+json"

    await client.post(f"/v1/accounts/{account_id}/cancel", headers=OPERATOR)
    bad = await client.post(f"/v1/accounts/{account_id}/reactivate", headers=OPERATOR,
                            json={"plan": {"monthly_credits": "200", "cycle": "weekly"}})
    assert (bad.status, list((await bad.json())["errors"])) == (422, ["plan.cycle"])
    response = await client.post(f"/v1/accounts/{account_id}/reactivate", json=NEW_PLAN, headers=OPERATOR)

    assert response.status == 200
    body = await response.json()
    assert (body["status"], body["canceled_at"], body["balance"]) == ("active", None, "200")
    assert body["plan"]["monthly_credits"] == "200"
    new_key = {"Authorization": f"Bearer {body['api_key']}"}
    assert (await client.get(f"/v1/accounts/{account_id}/balance", headers=new_key)).status == 200


async def test_mark_spam_flags_and_cancels_the_account(client):
    account_id, _ = await create_account(client)
    await client.post(f"/v1/accounts/{account_id}/grants", json={"credits": "30", "kind": "purchase"},
                      headers=OPERATOR)

    response = await client.post(f"/v1/accounts/{account_id}/mark-spam", headers=OPERATOR)

    assert response.status == 200
    body = await response.json()
    assert (body["status"], body["flags"]["spam"], body["balance"]) == ("canceled", True, "0")


async def test_events_list_every_change_newest_first_paged_and_the_account_sees_its_own(client):
    # given a plan change by the operator, then a cancel and a reactivation
    account_id, own = await create_account(client)
    await client.patch(f"/v1/accounts/{account_id}", headers=OPERATOR, json={
        "plan": {"monthly_credits": "300"}, "overdraft": {"policy": "overdraft", "limit": "50.5"}})
    own_view = await client.get(f"/v1/accounts/{account_id}/events", headers=own)
    assert [event["action"] for event in (await own_view.json())["data"]] == ["update"]
    await client.post(f"/v1/accounts/{account_id}/cancel", headers=OPERATOR)
    await client.post(f"/v1/accounts/{account_id}/reactivate", json=NEW_PLAN, headers=OPERATOR)

    # when the operator reads them two at a time
    first = await (await client.get(f"/v1/accounts/{account_id}/events?limit=2", headers=OPERATOR)).json()
    second = await (await client.get(f"/v1/accounts/{account_id}/events?limit=2&cursor={first['next_cursor']}",
                                     headers=OPERATOR)).json()

    # then every change is there once, newest first, with who made it
    assert [event["action"] for event in first["data"] + second["data"]] == ["reactivate", "cancel", "update"]
    assert second["next_cursor"] is None
    assert {event["actor"] for event in first["data"] + second["data"]} == {"operator"}
    # and its credits are decimal strings, as everywhere in the API
    assert first["data"][0]["detail"]["plan"]["monthly_credits"] == "200"
    assert first["data"][1]["detail"]["credits_expired"] == "100"
    assert second["data"][0]["detail"]["plan"]["monthly_credits"] == "300"
    assert second["data"][0]["detail"]["overdraft"] == {"policy": "overdraft", "limit": "50.5"}


@pytest.mark.parametrize("plan", [{}, {"cycle": "monthly", "rollover": "none"}])
async def test_reactivate_without_the_plans_monthly_credits_is_refused_and_the_account_stays_canceled(client, plan):
    # given a canceled account
    account_id, _ = await create_account(client)
    await client.post(f"/v1/accounts/{account_id}/cancel", headers=OPERATOR)

    # when the operator reactivates it with a plan that does not say its monthly credits
    response = await client.post(f"/v1/accounts/{account_id}/reactivate", json={"plan": plan}, headers=OPERATOR)

    # then 422 names the field, and the account is still canceled, with no new key and no credits
    assert (response.status, response.content_type) == (422, "application/problem+json")
    assert list((await response.json())["errors"]) == ["plan.monthly_credits"]
    shown = await (await client.get(f"/v1/accounts/{account_id}", headers=OPERATOR)).json()
    assert (shown["status"], shown["balance"]) == ("canceled", "0")


@pytest.mark.parametrize(("body", "status"), [({"reason": "bulk spam"}, 422), ([1], 400), ("not json", 400)])
async def test_mark_spam_with_a_body_it_does_not_take_is_refused_and_changes_nothing(client, body, status):
    # given an active account with 30 purchased credits
    account_id, _ = await create_account(client)
    await client.post(f"/v1/accounts/{account_id}/grants", json={"credits": "30", "kind": "purchase"},
                      headers=OPERATOR)

    # when the operator marks it as spam with a body it does not take (it has no fields)
    sent = {"data": body} if isinstance(body, str) else {"json": body}
    response = await client.post(f"/v1/accounts/{account_id}/mark-spam", headers=OPERATOR, **sent)

    # then it is refused as problem+json, and the account is still active with every credit
    assert (response.status, response.content_type) == (status, "application/problem+json")
    shown = await (await client.get(f"/v1/accounts/{account_id}", headers=OPERATOR)).json()
    assert (shown["status"], shown["flags"]["spam"], shown["balance"]) == ("active", False, "130")
