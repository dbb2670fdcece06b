"""Webhook endpoints over HTTP: the secret shown once and kept encrypted, URLs that may be called, the delivery
log and replay, and another tenant who can neither read, replay nor change an account's endpoints."""

import logging
from datetime import UTC, datetime

import pytest
from cryptography.fernet import Fernet
from sqlalchemy import text

from intake.app import init_app
from shared.config import Settings, WebhookSettings, load_settings
from shared.events import delivery, outbox
from shared.models import WebhookDelivery, WebhookEndpoint

OPERATOR = {"Authorization": "Bearer test-operator-key-0123456789"}
PUBLIC_URL = "https://93.184.215.14/creditq-hooks"  # an address literal: public, and no DNS needed


def bearer(key: str) -> dict:
    return {"Authorization": f"Bearer {key}"}




@pytest.fixture
def settings(tmp_path) -> Settings:
    """A production deployment: endpoints must be https and on public addresses."""
    return load_settings({"CREDITQ_DATA_DIR": str(tmp_path / "data"), "DATABASE_URL": f"sqlite:///{tmp_path / 'db'}",
                          "CREDITQ_ADMIN_KEY": "test-operator-key-0123456789", "CREDITQ_ENV": "production",
                          "STRIPE_API_KEY": "sk_test_production", "STRIPE_WEBHOOK_SECRET": "whsec_production",
                          "CREDITQ_SECRET_KEY": Fernet.generate_key().decode(), "SMTP_URL": "smtp://mail.example.com",
                          "TWILIO_API_BASE": "https://api.twilio.com", "TWILIO_ACCOUNT_SID": "AC" + "1" * 32,
                          "TWILIO_AUTH_TOKEN": "a-production-auth-token"})


@pytest.fixture
async def client(aiohttp_client, settings, sqlite_database, fake_broker, enqueued):
    return await aiohttp_client(init_app(settings, database=sqlite_database, broker=fake_broker))


async def new_account(client, name: str) -> tuple[str, dict]:
    response = await client.post("/v1/accounts", headers=OPERATOR, json={"name": name})
    assert response.status == 201
    created = await response.json()
    return created["id"], bearer(created["api_key"])


async def create_endpoint(client, account_id, headers, **body):
    return await client.post(f"/v1/accounts/{account_id}/webhook-endpoints", headers=headers,
                             json={"url": PUBLIC_URL, "events": ["message.received", "message.delivered"], **body})


async def test_the_secret_is_shown_on_create_only_and_stored_encrypted(client, sqlite_database, caplog):
    caplog.set_level(logging.DEBUG)
    account_id, headers = await new_account(client, "Grace Church")
    # when the account creates an endpoint
    response = await create_endpoint(client, account_id, headers, description="CRM")
    # then the answer carries its whsec_ secret, once
    assert response.status == 201
    created = await response.json()
    secret = created.pop("secret")
    assert secret.startswith("whsec_")
    assert created["events"] == ["message.delivered", "message.received"] and created["enabled"] is True
    read = await client.get(f"/v1/accounts/{account_id}/webhook-endpoints/{created['id']}", headers=headers)
    listed = await client.get(f"/v1/accounts/{account_id}/webhook-endpoints", headers=headers)
    assert await read.json() == created and (await listed.json())["data"] == [created]
    # and the database holds only ciphertext, no log line holds it
    with sqlite_database.unit_of_work() as session:
        stored = session.execute(text("SELECT secret FROM webhook_endpoints")).scalar_one()
        assert session.get(WebhookEndpoint, created["id"]).secret == secret
    assert secret not in stored and secret.removeprefix("whsec_") not in stored
    assert secret not in caplog.text


async def test_rotating_the_secret_shows_a_new_one_that_signs_from_then_on(client, sqlite_database):
    account_id, headers = await new_account(client, "Grace Church")
    created = await (await create_endpoint(client, account_id, headers)).json()
    response = await client.post(f"/v1/accounts/{account_id}/webhook-endpoints/{created['id']}/rotate-secret",
                                 headers=headers)
    assert response.status == 200
    rotated = (await response.json())["secret"]
    assert rotated.startswith("whsec_") and rotated != created["secret"]
    with sqlite_database.unit_of_work() as session:
        assert session.get(WebhookEndpoint, created["id"]).secret == rotated


@pytest.mark.parametrize("url, reason", [
    ("http://93.184.215.14/hooks", "must start with https://"),
    ("https://127.0.0.1/hooks", "resolves to 127.0.0.1, which is not a public address"),
    ("https://169.254.169.254/latest/meta-data", "resolves to 169.254.169.254, which is not a public address"),
    ("https://[::1]/hooks", "resolves to ::1, which is not a public address"),
    ("https://10.1.2.3/hooks", "resolves to 10.1.2.3, which is not a public address"),
])
async def test_urls_that_would_reach_creditqs_own_network_are_refused(client, url, reason):
    account_id, headers = await new_account(client, "Grace Church")
    response = await create_endpoint(client, account_id, headers, url=url)
    assert response.status == 422
    assert (await response.json())["errors"] == {"url": reason}
    created = await (await create_endpoint(client, account_id, headers)).json()
    patched = await client.patch(f"/v1/accounts/{account_id}/webhook-endpoints/{created['id']}", headers=headers,
                                 json={"url": url})
    assert patched.status == 422
    assert (await (await client.get(f"/v1/accounts/{account_id}/webhook-endpoints", headers=headers)).json())[
        "data"][0]["url"] == PUBLIC_URL


async def test_unknown_event_types_are_refused_and_a_wildcard_takes_all(client):
    account_id, headers = await new_account(client, "Grace Church")
    response = await create_endpoint(client, account_id, headers, events=["message.delivered", "message.exploded"])
    assert response.status == 422 and "message.exploded" in (await response.json())["errors"]["events"]
    response = await create_endpoint(client, account_id, headers, events=["*", "message.delivered"])
    assert response.status == 201 and (await response.json())["events"] == ["*"]


async def test_patch_changes_types_and_disables(client):
    account_id, headers = await new_account(client, "Grace Church")
    created = await (await create_endpoint(client, account_id, headers)).json()
    response = await client.patch(f"/v1/accounts/{account_id}/webhook-endpoints/{created['id']}", headers=headers,
                                  json={"events": ["payment.failed"], "enabled": False})
    assert response.status == 200
    changed = await response.json()
    assert (changed["events"], changed["enabled"], changed["disabled_reason"]) == (["payment.failed"], False, None)


def given_a_delivery(database, account_id: str, endpoint_id: str) -> tuple[str, str]:
    """An event written by a transaction of the web process, and its delivery: (event id, delivery id)."""
    now = datetime.now(UTC)
    with database.unit_of_work() as session:
        event_id = outbox.emit(session, "message.received", account_id=account_id, key="k1", data={"id": "msg_1"},
                               now=now)
    with database.unit_of_work() as session:
        [delivery_id] = delivery.dispatch(session, event_id, settings=WebhookSettings(), now=now)
    return event_id, delivery_id


async def test_the_delivery_log_lists_deliveries_and_a_replay_queues_one_again(client, sqlite_database, enqueued):
    account_id, headers = await new_account(client, "Grace Church")
    created = await (await create_endpoint(client, account_id, headers)).json()
    event_id, delivery_id = given_a_delivery(sqlite_database, account_id, created["id"])
    # the web process handed the committed event to its fan-out job at once
    assert ("dispatch_webhook_event", (event_id,)) in [(m.actor_name, m.args) for m in enqueued]
    base = f"/v1/accounts/{account_id}/webhook-endpoints/{created['id']}/deliveries"
    log = await (await client.get(base, headers=headers)).json()
    assert [(row["id"], row["event_type"], row["status"], row["attempts"]) for row in log["data"]] == [
        (delivery_id, "message.received", "pending", 0)]
    response = await client.post(f"{base}/{delivery_id}/replay", headers=headers)
    assert response.status == 202 and (await response.json())["status"] == "pending"
    assert [(m.actor_name, m.args) for m in enqueued if m.actor_name == "deliver_webhook"] == [
        ("deliver_webhook", (delivery_id,))]


async def test_another_tenant_can_neither_read_change_replay_nor_delete_an_accounts_endpoints(client, sqlite_database):
    # given Grace Church's endpoint, with a delivery
    grace, grace_headers = await new_account(client, "Grace Church")
    created = await (await create_endpoint(client, grace, grace_headers)).json()
    _, delivery_id = given_a_delivery(sqlite_database, grace, created["id"])
    _, other_headers = await new_account(client, "Acme Realty")
    other, _ = await new_account(client, "Unused")
    endpoint = f"/v1/accounts/{grace}/webhook-endpoints/{created['id']}"
    # when another account's key tries every operation on it, through Grace's path and through its own
    attempts = [
        ("GET", f"/v1/accounts/{grace}/webhook-endpoints", None), ("POST", f"/v1/accounts/{grace}/webhook-endpoints",
                                                                   {"url": PUBLIC_URL, "events": ["*"]}),
        ("GET", endpoint, None), ("PATCH", endpoint, {"url": PUBLIC_URL + "/stolen"}),
        ("POST", f"{endpoint}/rotate-secret", None), ("GET", f"{endpoint}/deliveries", None),
        ("POST", f"{endpoint}/deliveries/{delivery_id}/replay", None), ("DELETE", endpoint, None),
    ]
    for method, path, body in attempts:
        response = await client.request(method, path, headers=other_headers, json=body)
        assert response.status == 404, (method, path)
    own_path = endpoint.replace(grace, other)
    for method, path in (("GET", own_path), ("PATCH", own_path), ("DELETE", own_path),
                         ("GET", f"{own_path}/deliveries"), ("POST", f"{own_path}/deliveries/{delivery_id}/replay")):
        response = await client.request(method, path, headers=OPERATOR, json={} if method == "PATCH" else None)
        assert response.status == 404, (method, path)
    # then Grace's endpoint is as it was, its secret unchanged, its delivery not replayed
    still = await (await client.get(endpoint, headers=grace_headers)).json()
    assert still["url"] == PUBLIC_URL and still["enabled"] is True
    with sqlite_database.unit_of_work() as session:
        assert session.get(WebhookEndpoint, created["id"]).secret == created["secret"]


async def test_the_delivery_log_filters_by_status_and_refuses_a_filter_it_does_not_take(client, sqlite_database):
    # given an endpoint with a delivery that succeeded and one that failed
    account_id, headers = await new_account(client, "Grace Church")
    created = await (await create_endpoint(client, account_id, headers)).json()
    now = datetime.now(UTC)
    ids = {}
    for key, status in (("k1", "succeeded"), ("k2", "failed")):
        with sqlite_database.unit_of_work() as session:
            event_id = outbox.emit(session, "message.received", account_id=account_id, key=key, data={"id": key},
                                   now=now)
        with sqlite_database.unit_of_work() as session:
            [ids[status]] = delivery.dispatch(session, event_id, settings=WebhookSettings(), now=now)
            session.get(WebhookDelivery, ids[status]).status = status
    base = f"/v1/accounts/{account_id}/webhook-endpoints/{created['id']}/deliveries"

    # when the account lists its failed deliveries, a status that is none, and a filter the log does not take
    failed = await client.get(f"{base}?status=failed", headers=headers)
    lost = await client.get(f"{base}?status=lost", headers=headers)
    bogus = await client.get(f"{base}?bogus=1", headers=headers)

    # then only the failed one comes back, and the other two are 422s naming their filter
    assert [(row["id"], row["status"]) for row in (await failed.json())["data"]] == [(ids["failed"], "failed")]
    assert (lost.status, list((await lost.json())["errors"])) == (422, ["status"])
    assert (bogus.status, (await bogus.json())["errors"]) == (422, {"bogus": "is not a known field"})
