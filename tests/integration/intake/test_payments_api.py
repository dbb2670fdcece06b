"""Purchases, auto-recharge and the dunning schedule over HTTP."""

import pytest

from intake.app import init_app
from shared.api_keys import issue_key
from shared.billing.gateways import gateway_from_settings
from shared.models import Account

OPERATOR = {"Authorization": "Bearer test-operator-key-0123456789"}


@pytest.fixture
def key(sqlite_database) -> dict:
    with sqlite_database.unit_of_work() as session:
        session.add(Account(id="acct_pay", name="Realty", balance=0, held=0, allocated=0, allocated_held=0))
        session.flush()
        return {"Authorization": f"Bearer {issue_key(session, 'acct_pay')}"}


@pytest.fixture
async def client(aiohttp_client, settings, sqlite_database, fake_broker, key):
    return await aiohttp_client(init_app(settings, database=sqlite_database, broker=fake_broker))


async def balance(client, key) -> str:
    return (await (await client.get("/v1/accounts/acct_pay/balance", headers=key)).json())["balance"]


async def test_a_gateway_that_does_not_answer_is_a_503_telling_how_to_retry_without_paying_twice(client, key):
    body = {"credits": "500", "payment_method": "pm_card_chargeDeclinedProcessingError"}

    # when the gateway fails a purchase sent with an Idempotency-Key, and one sent without
    keyed = await client.post("/v1/accounts/acct_pay/purchases", json=body,
                              headers={**key, "Idempotency-Key": "buy-503"})
    unkeyed = await client.post("/v1/accounts/acct_pay/purchases", json=body, headers=key)

    # then both are 503s; the first says to retry with its key, the second to send one
    assert (keyed.status, unkeyed.status) == (503, 503)
    assert (await keyed.json())["detail"].endswith(" Retry with the same Idempotency-Key.")
    detail = (await unkeyed.json())["detail"]
    assert detail.endswith(" Retry (send an Idempotency-Key so a retry never charges twice).")
    assert "same Idempotency-Key" not in detail


async def test_a_purchase_lands_credits_and_replays_without_a_second_charge(client, key, settings):
    headers = {**key, "Idempotency-Key": "buy-1"}
    body = {"credits": "500", "payment_method": "pm_card_visa"}

    first = await client.post("/v1/accounts/acct_pay/purchases", json=body, headers=headers)
    again = await client.post("/v1/accounts/acct_pay/purchases", json=body, headers=headers)

    assert (first.status, again.status) == (201, 201)
    paid = await first.json()
    assert (paid["status"], paid["credits"], paid["amount_cents"]) == ("succeeded", "500", 2250)
    assert (await again.json())["id"] == paid["id"]
    assert len(gateway_from_settings(settings).charges("acct_pay")) == 1
    assert await balance(client, key) == "500"


async def test_a_declined_card_is_a_402_problem_and_no_credits(client, key):
    response = await client.post("/v1/accounts/acct_pay/purchases",
                                 json={"credits": "100", "payment_method": "pm_card_chargeDeclinedInsufficientFunds"},
                                 headers=key)
    problem = await response.json()
    assert response.status == 402 and response.content_type == "application/problem+json"
    assert problem["decline_code"] == "insufficient_funds" and problem["payment"]["status"] == "declined"
    assert await balance(client, key) == "0"


@pytest.mark.parametrize("body", [{"credits": "123", "payment_method": "pm_card_visa"}, {"credits": "100"},
                                  {"credits": 1.5, "payment_method": "pm_card_visa"}])
async def test_bad_purchases_are_422(client, key, body):
    response = await client.post("/v1/accounts/acct_pay/purchases", json=body, headers=key)
    assert response.status == 422


async def test_a_purchase_naming_a_field_it_does_not_take_is_a_422_naming_it_and_charges_nothing(client, key):
    # when a purchase names an amount and a currency of its own beside the bucket
    response = await client.post("/v1/accounts/acct_pay/purchases", headers=key, json={
        "credits": "100", "payment_method": "pm_card_visa", "amount_cents": 1, "currency": "jpy"})

    # then it is refused naming both, and nothing was charged or granted
    problem = await response.json()
    assert response.status == 422 and sorted(problem["errors"]) == ["amount_cents", "currency"]
    assert await balance(client, key) == "0"
    listed = await (await client.get("/v1/accounts/acct_pay/purchases", headers=key)).json()
    assert listed["data"] == []


async def test_auto_recharge_is_saved_and_shown_with_its_state(client, key):
    saved = await client.put("/v1/accounts/acct_pay/auto-recharge", headers=key, json={
        "enabled": True, "threshold": "50", "credits": "100", "payment_method": "pm_card_visa"})
    shown = await client.get("/v1/accounts/acct_pay/auto-recharge", headers=key)

    assert saved.status == 200 and shown.status == 200
    view = await shown.json()
    assert (view["enabled"], view["threshold"], view["credits"], view["state"], view["disabled_reason"]) == (
        True, "50", "100", "ready", None)


async def test_a_dunning_schedule_with_a_risky_text_is_saved_with_a_warning(client, key):
    response = await client.put("/v1/accounts/acct_pay/dunning", headers=key, json={
        "steps": [{"day": 0, "email": {"subject": "Due: {{ amount_due }}", "body": "Pay at {{ update_link }}"},
                   "sms": {"body": "{{ customer_name }}, pay {{ amount_due }}"}}],
        "final_action": "suspend"})
    body = await response.json()
    assert response.status == 200 and body["warnings"] == [
        'steps[0].sms.body lacks STOP and HELP wording (e.g. "Reply HELP for help, STOP to opt out.")']


async def test_an_unknown_template_variable_is_a_422(client, key):
    response = await client.put("/v1/accounts/acct_pay/dunning", headers=key,
                                json={"steps": [{"day": 0, "sms": {"body": "{{ nope }} STOP HELP"}}]})
    assert response.status == 422 and "steps[0].sms.body" in (await response.json())["errors"]


async def test_the_operator_saves_the_built_in_site_and_an_account_key_only_sites_of_its_own_from_its_numbers(
        client, key):
    body = {"account_sid": "AC" + "1" * 32, "auth_token": "secret", "from": "+15005550006"}
    # an account key names a site of its own: from a number it does not have, it is refused before Twilio is asked
    refused = await client.put("/v1/dunning/integrations/default", json=body, headers=key)
    saved = await client.put("/v1/dunning/integrations/default", json=body, headers=OPERATOR)
    assert refused.status == 422 and "from" in (await refused.json())["errors"] and saved.status == 200
    shown = await saved.json()
    assert shown["status"] == "ok" and "auth_token" not in shown
    # and the operator's built-in site is not the account's
    assert (await client.get("/v1/dunning/integrations/default", headers=key)).status == 404


async def test_a_card_number_as_payment_method_is_a_422_that_neither_repeats_nor_keeps_it(client, key,
                                                                                          sqlite_database):
    # given a customer who types a card number where a token belongs, with an Idempotency-Key
    card = "4242 4242 4242 4242"
    headers = {**key, "Idempotency-Key": "buy-with-card"}

    # when the purchase and the auto-recharge settings are sent
    bought = await client.post("/v1/accounts/acct_pay/purchases", headers=headers,
                               json={"credits": "100", "payment_method": card})
    saved = await client.put("/v1/accounts/acct_pay/auto-recharge", headers=key,
                             json={"enabled": True, "threshold": "50", "credits": "100", "payment_method": card})

    # then both are 422 problems naming the field and not the number
    for response in (bought, saved):
        text = await response.text()
        assert response.status == 422 and response.content_type == "application/problem+json"
        assert "payment_method" in (await response.json())["errors"]
        assert "4242" not in text
    # and no row holds it: no payment, no card on file, and the remembered answer only as digest and ciphertext
    with sqlite_database.engine.connect() as connection:
        rows = [" ".join(map(str, row)) for table in ("payments", "auto_recharges", "idempotency_records")
                for row in connection.exec_driver_sql(f"SELECT * FROM {table}")]
    assert len(rows) == 1 and not any(card in row or card.replace(" ", "") in row for row in rows)
    assert await balance(client, key) == "0"
