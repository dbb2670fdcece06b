"""A campaign over the real processes: web, worker, Twilio simulator, Redis, PostgreSQL."""

import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import redis
import requests
from sqlalchemy import func, select

from shared.campaigns.bulk_queues import bulk_queue_for
from shared.db import Database
from shared.models import Entry
from tests.e2e.test_send_pipeline_e2e import OPERATOR, ledger_verify, new_account, simulated
from tests.support.stack import Stack

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def stack(postgres_server, tmp_path_factory):
    env = {"CREDITQ_SENDER_RATES": "long_code=1000,toll_free=1000,short_code=1000",
           "TWILIO_SIM_CALLBACK_DELAY_MS": "50", "CREDITQ_NEW_ACCOUNT_DAYS": "0"}  # minutes-old accounts send 3,000
    with Stack(postgres_server, tmp_path_factory.mktemp("stack"), database_name="e2e_campaign", env=env) as running:
        yield running


def campaign(stack, headers: dict, campaign_id: str) -> dict:
    response = requests.get(f"{stack.url}/v1/campaigns/{campaign_id}", headers=headers, timeout=10)
    assert response.status_code == 200, response.text
    return response.json()


def test_a_campaign_reaches_every_valid_recipient_once_and_charges_what_twilio_sent(stack):
    # given a prepaid account with 200 credits, a number on its do-not-contact list, and a list with a duplicate
    # and an invalid number among 60 recipients
    account_id, headers, sender = new_account(stack, 9001, "200")
    requests.post(f"{stack.url}/v1/opt-outs", headers=headers, json={"phone": "+14155550207"},
                  timeout=10).raise_for_status()
    recipients = [{"to": f"+1415555{200 + n:04d}", "fields": {"first_name": f"Member{n}"}} for n in range(58)]
    recipients += [{"to": "+14155550201", "fields": {"first_name": "Again"}},
                   {"to": "12", "fields": {"first_name": "Nobody"}}]

    # when the campaign is posted (the body is a Liquid template rendered per recipient)
    response = requests.post(f"{stack.url}/v1/campaigns", headers=headers, timeout=30, json={
        "name": "Easter service", "from": sender, "recipients": recipients,
        "body": "Hi {{ first_name }}, Easter service is at 10am. Reply STOP to opt out.",
        "quiet_hours": {"start": "00:00", "end": "00:00"}})
    assert response.status_code == 202, response.text
    campaign_id = response.json()["id"]

    # then every valid recipient gets exactly one text, and the skips carry their reasons
    deadline = time.monotonic() + 120
    while (view := campaign(stack, headers, campaign_id))["counts"]["delivered"] < 57:
        assert time.monotonic() < deadline, view
        time.sleep(0.5)
    assert view["counts"]["skipped"] == 3
    assert view["skip_reasons"] == {"do_not_contact": 1, "duplicate": 1, "invalid_number": 1}
    sent = [m for m in simulated(stack)["messages"] if m["from"] == sender]
    assert len(sent) == 57 and {m["creates"] for m in sent} == {1}
    assert "+14155550207" not in {m["to"] for m in sent}
    assert any(m["body"] == "Hi Member3, Easter service is at 10am. Reply STOP to opt out." for m in sent)

    # and, once settled, the account paid exactly Twilio's segments, with a clean ledger
    expected = sum(m["num_segments"] for m in sent) * 1000
    while campaign(stack, headers, campaign_id)["credits_charged"] != str(expected // 1000):
        assert time.monotonic() < deadline, campaign(stack, headers, campaign_id)
        time.sleep(0.5)
    database = Database(stack.database_url, pool_size=1)
    try:
        with database.unit_of_work() as session:
            usage = session.scalar(select(func.sum(Entry.amount)).where(Entry.account_id == account_id,
                                                                        Entry.kind == "usage"))
    finally:
        database.dispose()
    assert -usage == expected
    assert ledger_verify(stack).returncode == 0
    balance = requests.get(f"{stack.url}/v1/accounts/{account_id}/balance", headers=OPERATOR, timeout=10).json()
    assert balance["balance"] == str(200 - expected // 1000) and balance["held"] == "0"

    # and a completed campaign cannot be canceled after the fact
    assert campaign(stack, headers, campaign_id)["status"] == "completed"
    cancel = requests.post(f"{stack.url}/v1/campaigns/{campaign_id}/cancel", headers=headers, timeout=10)
    assert cancel.status_code == 409 and cancel.headers["Content-Type"].startswith("application/problem+json")
    assert campaign(stack, headers, campaign_id)["status"] == "completed"


NO_QUIET_HOURS = {"start": "00:00", "end": "00:00"}


def post_campaign(stack, headers: dict, sender: str, name: str, body: str, recipients: list[str]) -> str:
    response = requests.post(f"{stack.url}/v1/campaigns", headers=headers, timeout=60, json={
        "name": name, "from": sender, "body": body, "recipients": [{"to": to} for to in recipients],
        "quiet_hours": NO_QUIET_HOURS})
    assert response.status_code == 202, response.text
    return response.json()["id"]


@contextmanager
def big_campaign_under_way(stack, headers: dict, sender: str, area: str) -> Iterator[tuple[str, float]]:
    """A campaign of 3,000 members (numbers of `area`) with its first 50 delivered, Twilio taking 100 ms to answer
    each create: (its id, the deadline for what the test waits on); canceled afterwards, Twilio quick again."""
    requests.post(f"{stack.simulator_url}/_sim/config", json={"latency_ms": 100}, timeout=10).raise_for_status()
    campaign_id = post_campaign(stack, headers, sender, "Christmas Eve",
                                "Candlelight service at 7pm. Reply STOP to opt out.",
                                [f"+1{area}555{n:04d}" for n in range(3000)])
    try:
        deadline = time.monotonic() + 120
        while campaign(stack, headers, campaign_id)["counts"].get("delivered", 0) < 50:
            assert time.monotonic() < deadline, campaign(stack, headers, campaign_id)
            time.sleep(0.2)
        yield campaign_id, deadline
    finally:
        requests.post(f"{stack.simulator_url}/_sim/config", json={"latency_ms": 0}, timeout=10)
        requests.post(f"{stack.url}/v1/campaigns/{campaign_id}/cancel", headers=headers, timeout=30)


def test_a_single_text_goes_out_while_another_accounts_big_campaign_waits_for_the_workers(stack):
    # given a church's campaign of 3,000 members on its way, Twilio taking 100 ms to answer each create
    _, church, church_sender = new_account(stack, 9101, "4000")
    _, realtor, realtor_sender = new_account(stack, 9102, "10")
    with big_campaign_under_way(stack, church, church_sender, "628") as (campaign_id, deadline):
        # when a realtor sends one text
        response = requests.post(f"{stack.url}/v1/messages", headers=realtor, timeout=10,
                                 json={"to": "+14155550199", "from": realtor_sender, "body": "Open house at 2pm"})
        assert response.status_code == 202, response.text
        message_url = f"{stack.url}/v1/messages/{response.json()['id']}"
        while (text := requests.get(message_url, headers=realtor, timeout=10).json())["status"] != "delivered":
            assert time.monotonic() < deadline, text
            time.sleep(0.1)

        # then it went out while most of the campaign was still waiting for the workers, not after it
        counts = campaign(stack, church, campaign_id)["counts"]
        assert counts["queued"] >= 1500, counts


def test_a_small_campaign_goes_out_while_another_accounts_big_campaign_waits_for_the_workers(stack):
    # given a church's campaign of 3,000 members on its way, Twilio taking 100 ms to answer each create, and a
    # realtor whose campaign texts wait on another queue than the church's (the account's id decides), one that no
    # job of the tests before waits on
    church_id, church, church_sender = new_account(stack, 9111, "4000")
    jobs = redis.Redis.from_url(stack.redis.url)
    for n in range(9112, 9200):
        realtor_id, realtor, realtor_sender = new_account(stack, n, "100")
        queue = bulk_queue_for(realtor_id)
        if queue != bulk_queue_for(church_id) and jobs.hlen(f"dramatiq:{queue}.msgs") == 0:
            break
    with big_campaign_under_way(stack, church, church_sender, "629") as (big, deadline):
        # when the realtor sends a campaign of 20
        small = post_campaign(stack, realtor, realtor_sender, "Open house",
                              "Open house Sunday at 2pm. Reply STOP to opt out.",
                              [f"+1630555{n:04d}" for n in range(20)])
        while (counts := campaign(stack, realtor, small)["counts"]).get("delivered", 0) < 20:
            assert time.monotonic() < deadline, counts
            time.sleep(0.1)

        # then it went out while most of the church's campaign was still waiting for the workers, not after it
        counts = campaign(stack, church, big)["counts"]
        assert counts["queued"] >= 1500, counts
