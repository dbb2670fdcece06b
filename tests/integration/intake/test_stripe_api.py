"""Stripe over HTTP, against the stand-in: the signed webhook (forged, stale and replayed events change nothing),
purchases with 3-D Secure, another account's card, the card setup page and the card on file, the dunning link."""

import asyncio
import json
import re
import time
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from intake.app import init_app
from shared.api_keys import issue_key
from shared.billing import auto_recharge, dunning, payment_links
from shared.billing.dunning_texts import DunningTexter
from shared.config import load_settings
from shared.email import FileOutbox
from shared.models import Account, DunningRun, GatewayEvent, Payment, User
from stripe_sim.delivery import signature_header
from tests.stripe_sim_fixtures import background_loop, stripe_stand_in  # noqa: F401  (fixtures)


@pytest.fixture
def settings(tmp_path, stripe_stand_in):
    return load_settings({
        "CREDITQ_DATA_DIR": str(tmp_path / "data"), "DATABASE_URL": f"sqlite:///{tmp_path / 'creditq.db'}",
        "CREDITQ_ADMIN_KEY": "test-operator-key-0123456789", "PAYMENT_GATEWAY": "stripe",
        "STRIPE_API_BASE": stripe_stand_in.url, "PUBLIC_BASE_URL": "http://127.0.0.1:9",
    })


@pytest.fixture
def keys(sqlite_database) -> dict:
    with sqlite_database.unit_of_work() as session:
        keys = {}
        for account_id in ("acct_a", "acct_b"):
            session.add(Account(id=account_id, name=account_id, balance=0, held=0, allocated=0, allocated_held=0))
            session.flush()
            keys[account_id] = {"Authorization": f"Bearer {issue_key(session, account_id)}"}
        return keys


@pytest.fixture
async def client(aiohttp_client, settings, sqlite_database, fake_broker, keys, enqueued):
    return await aiohttp_client(init_app(settings, database=sqlite_database, broker=fake_broker))


def signed(event: dict, secret: str, *, at: int | None = None) -> tuple[str, dict]:
    payload = json.dumps({key: value for key, value in event.items() if not key.startswith("_")})
    return payload, {"Stripe-Signature": signature_header(payload, secret, at), "Content-Type": "application/json"}


async def balance(client, key) -> str:
    return (await (await client.get("/v1/accounts/acct_a/balance", headers=key)).json())["balance"]


async def test_3d_secure_answers_202_requires_action_and_the_signed_webhook_lands_the_credits_once(
        client, keys, stripe_stand_in, sqlite_database):
    # given a purchase with a card that asks for 3-D Secure
    response = await client.post("/v1/accounts/acct_a/purchases", headers=keys["acct_a"],
                                 json={"credits": "100", "payment_method": "pm_card_authenticationRequired"})
    pending = await response.json()
    assert response.status == 202 and pending["status"] == "requires_action" and pending["action_url"]

    # when the customer authenticates and Stripe's event is delivered twice
    stripe_stand_in.authenticate(pending["intent_id"])
    [event] = stripe_stand_in.events("payment_intent.succeeded")
    payload, headers = signed(event, stripe_stand_in.config.webhook_secret)
    answers = [await client.post("/webhooks/stripe", data=payload, headers=headers) for _ in range(2)]

    # then both are 200, the credits landed once, and the event is remembered by its id
    assert [answer.status for answer in answers] == [200, 200]
    assert await balance(client, keys["acct_a"]) == "100"
    with sqlite_database.unit_of_work() as session:
        assert session.get(GatewayEvent, event["id"]) is not None


@pytest.mark.parametrize("tamper", ["forged", "stale", "unsigned", "altered"])
async def test_a_forged_stale_or_altered_event_is_refused_and_changes_nothing(client, keys, stripe_stand_in,
                                                                             sqlite_database, tamper):
    # given a payment waiting for 3-D Secure, authenticated at Stripe, and its event in an attacker's hands
    response = await client.post("/v1/accounts/acct_a/purchases", headers=keys["acct_a"],
                                 json={"credits": "100", "payment_method": "pm_card_authenticationRequired"})
    stripe_stand_in.authenticate((await response.json())["intent_id"])
    [event] = stripe_stand_in.events("payment_intent.succeeded")
    secret = stripe_stand_in.config.webhook_secret
    payload, headers = {
        "forged": lambda: signed(event, "whsec_guessed"),
        "stale": lambda: signed(event, secret, at=int(time.time()) - 3600),
        "unsigned": lambda: (signed(event, secret)[0], {"Content-Type": "application/json"}),
        "altered": lambda: (signed(event, secret)[0].replace(event["id"], "evt_other"), signed(event, secret)[1]),
    }[tamper]()

    answer = await client.post("/webhooks/stripe", data=payload, headers=headers)

    assert answer.status == 400 and answer.content_type == "application/problem+json"
    assert await balance(client, keys["acct_a"]) == "0"
    with sqlite_database.unit_of_work() as session:
        assert session.query(GatewayEvent).count() == 0
        assert session.query(Payment).one().status == "requires_action"


async def test_account_a_paying_with_account_bs_saved_card_is_a_422_and_no_charge(client, keys, stripe_stand_in):
    # given account B's card on file, saved through Stripe
    saved = await client.put("/v1/accounts/acct_b/auto-recharge", headers=keys["acct_b"], json={
        "enabled": False, "threshold": "0", "credits": "100", "payment_method": "pm_card_visa"})
    card_of_b = (await saved.json())["payment_method"]
    assert saved.status == 200 and card_of_b.startswith("pm_") and card_of_b != "pm_card_visa"

    # when account A pays with it
    response = await client.post("/v1/accounts/acct_a/purchases", headers=keys["acct_a"],
                                 json={"credits": "100", "payment_method": card_of_b})

    # then 422 on payment_method, and Stripe made no PaymentIntent
    refusal = await response.json()
    assert response.status == 422 and "payment_method" in refusal["errors"]
    assert stripe_stand_in.payment_intents() == []

    # and a card id that exists nowhere answers alike: A cannot tell B's card from no card at all
    unknown = await client.post("/v1/accounts/acct_a/purchases", headers=keys["acct_a"],
                                json={"credits": "100", "payment_method": "pm_1NoSuchCardAnywhere0000"})
    unknown_refusal = await unknown.json()
    assert unknown.status == 422
    assert (unknown_refusal["detail"], unknown_refusal["errors"]) == (refusal["detail"], refusal["errors"])


async def test_a_declined_purchase_is_a_402_with_stripes_decline_code(client, keys):
    response = await client.post("/v1/accounts/acct_a/purchases", headers=keys["acct_a"],
                                 json={"credits": "100", "payment_method": "pm_card_chargeDeclined"})
    problem = await response.json()
    assert response.status == 402 and problem["decline_code"] == "generic_decline"
    assert problem["payment"]["status"] == "declined" and await balance(client, keys["acct_a"]) == "0"


async def test_the_setup_page_saves_the_card_on_file_that_get_payment_method_shows(client, keys, stripe_stand_in):
    # given a setup page made for account A
    response = await client.post("/v1/accounts/acct_a/payment-method/setup", headers=keys["acct_a"])
    setup = await response.json()
    assert response.status == 201 and setup["url"].startswith(stripe_stand_in.url)

    # when the customer saves a Mastercard there and Stripe's events arrive
    assert stripe_stand_in.complete_checkout(setup["url"], "pm_card_mastercard").status_code == 303
    for event in stripe_stand_in.events():
        payload, headers = signed(event, stripe_stand_in.config.webhook_secret)
        assert (await client.post("/webhooks/stripe", data=payload, headers=headers)).status == 200

    # then it is the card on file
    shown = await (await client.get("/v1/accounts/acct_a/payment-method", headers=keys["acct_a"])).json()
    assert (shown["brand"], shown["last4"]) == ("mastercard", "4444")


async def test_another_tenant_cannot_make_or_read_an_accounts_card_setup(client, keys):
    made = await client.post("/v1/accounts/acct_a/payment-method/setup", headers=keys["acct_b"])
    read = await client.get("/v1/accounts/acct_a/payment-method", headers=keys["acct_b"])
    assert (made.status, read.status) == (404, 404)


async def test_the_dunning_link_opens_a_fresh_setup_page_and_a_forged_or_expired_one_does_not(client, keys,
                                                                                             settings):
    link = payment_links.update_link(settings.public_base_url, "acct_a", now=datetime.now(UTC))
    token = link.rsplit("/", 1)[1]
    followed = [await client.get(f"{payment_links.PATH}{token}", allow_redirects=False) for _ in range(2)]
    forged = await client.get(f"{payment_links.PATH}acct_a.zzzzzzz.{token.rsplit('.', 1)[1]}", allow_redirects=False)
    expired = payment_links.update_link(settings.public_base_url, "acct_a",
                                        now=datetime(2020, 1, 1, tzinfo=UTC)).rsplit("/", 1)[1]
    old = await client.get(f"{payment_links.PATH}{expired}", allow_redirects=False)

    assert [answer.status for answer in followed] == [303, 303]
    assert followed[0].headers["Location"] != followed[1].headers["Location"]  # a fresh Checkout Session each time
    assert (forged.status, old.status) == (404, 404)


async def test_the_dunning_emails_link_opens_a_setup_page_whose_card_resumes_auto_recharge(
        client, keys, stripe_stand_in, sqlite_database, settings, tmp_path, enqueued):
    # given an account whose saved card is declined three times in a row: auto-recharge disabled, dunning started
    database, gateway = sqlite_database, stripe_stand_in.gateway()
    with database.unit_of_work() as session:
        session.add(User(id="usr_owner", account_id="acct_a", name="Dana Whitfield", email="dana@example.com",
                         role="owner"))
    saved = await client.put("/v1/accounts/acct_a/auto-recharge", headers=keys["acct_a"], json={
        "enabled": True, "threshold": "50", "credits": "100", "payment_method": "pm_card_chargeCustomerFail"})
    assert saved.status == 200, await saved.text()
    start = datetime.now(UTC)
    for wait in (timedelta(0), timedelta(hours=1, seconds=1), timedelta(hours=7, seconds=2)):
        await asyncio.to_thread(auto_recharge.run, database, gateway, "acct_a", now=start + wait)
    with database.unit_of_work() as session:
        assert auto_recharge.get_settings(session, "acct_a").disabled_reason is not None
        run_id = session.scalar(select(DunningRun.id).where(DunningRun.unpaid_account_id == "acct_a"))
    outbox = FileOutbox(tmp_path / "outbox")
    await asyncio.to_thread(dunning.run_step, database, gateway=gateway, email_sender=outbox,
                            texter=DunningTexter(None), public_base_url=settings.public_base_url, run_id=run_id,
                            step=0, now=start)

    # when the owner follows the email's link and saves a card on the page it opens
    [email] = outbox.messages()
    link = re.search(rf"{re.escape(settings.public_base_url)}(/billing/card/\S+)", email.get_content()).group(1)
    followed = await client.get(link, allow_redirects=False)
    assert followed.status == 303
    assert stripe_stand_in.complete_checkout(followed.headers["Location"], "pm_card_visa").status_code == 303
    for event in stripe_stand_in.events():
        payload, headers = signed(event, stripe_stand_in.config.webhook_secret)
        assert (await client.post("/webhooks/stripe", data=payload, headers=headers)).status == 200

    # then auto-recharge is ready again with the new card, and the unpaid run pays with it
    state = await (await client.get("/v1/accounts/acct_a/auto-recharge", headers=keys["acct_a"])).json()
    shown = await (await client.get("/v1/accounts/acct_a/payment-method", headers=keys["acct_a"])).json()
    assert (state["state"], state["disabled_reason"], state["consecutive_failures"]) == ("ready", None, 0)
    assert state["payment_method"] == shown["payment_method"] and shown["last4"] == "4242"
    with database.unit_of_work() as session:
        assert session.get(DunningRun, run_id).payment_method == shown["payment_method"]
    assert [(m.actor_name, m.args) for m in enqueued if m.actor_name == "retry_dunning_payment"][:1] == [
        ("retry_dunning_payment", (run_id,))]
