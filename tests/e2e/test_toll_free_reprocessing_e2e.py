"""Toll-free reprocessing over the real processes (web, worker, Twilio simulator, Redis, PostgreSQL): a text that
carriers filter on a local number arrives from the account's toll-free number, and the money adds up."""

import time

import pytest
import requests
from sqlalchemy import select

from shared.models import Message
from tests.e2e.test_send_pipeline_e2e import ledger_verify, new_account, simulated
from tests.support.stack import Stack

pytestmark = pytest.mark.e2e

FILTERED = {"undelivered:30007": 1}
# 100 characters with an em dash: UCS-2, two segments from the local number; the resend costs one credit (<= 160).
BODY = ("Open house Sunday 2pm — 41 Elm St. Reply YES to book a viewing slot; bring ID. See you there, Dana!!")
FINAL = ("delivered", "undelivered", "failed")


@pytest.fixture(scope="module")
def stack(postgres_server, tmp_path_factory):
    env = {"CREDITQ_SENDER_RATES": "long_code=1000,toll_free=1000,short_code=1000",
           "TWILIO_SIM_CALLBACK_DELAY_MS": "100"}
    with Stack(postgres_server, tmp_path_factory.mktemp("stack"), database_name="e2e_reprocessing", env=env,
               worker_processes=1) as running:
        yield running


def reprocessing_account(stack, n: int, *, enabled: bool) -> tuple[str, dict, str, str]:
    """An account with 10 credits, a local and a toll-free number, and the setting as asked, set with its own key."""
    account_id, headers, local = new_account(stack, n, "10")
    toll_free = f"+1800555{n:04d}"
    added = requests.post(f"{stack.url}/v1/accounts/{account_id}/numbers", headers=headers, timeout=10,
                          json={"phone": toll_free, "type": "toll_free"})
    assert added.status_code == 201, added.text
    changed = requests.patch(f"{stack.url}/v1/accounts/{account_id}", headers=headers, timeout=10,
                             json={"settings": {"toll_free_reprocessing": enabled}})
    assert changed.json()["settings"]["toll_free_reprocessing"] is enabled, changed.text
    return account_id, headers, local, toll_free


def send(stack, headers: dict, sender: str) -> str:
    response = requests.post(f"{stack.url}/v1/messages", headers=headers, timeout=10,
                             json={"to": "+14155550100", "from": sender, "body": BODY})
    assert response.status_code == 202, response.text
    return response.json()["id"]


def read(stack, headers: dict, message_id: str) -> dict:
    response = requests.get(f"{stack.url}/v1/messages/{message_id}", headers=headers, timeout=10)
    assert response.status_code == 200, response.text
    return response.json()


def settled(message: dict) -> bool:
    return message["status"] in FINAL and message["credits_charged"] is not None


def wait_for(stack, headers: dict, message_id: str, done, timeout: float = 60.0) -> dict:
    """The message as GET /v1/messages/{id} shows it, once done(message) holds."""
    deadline = time.monotonic() + timeout
    while not done(message := read(stack, headers, message_id)):
        if time.monotonic() > deadline:
            pytest.fail(f"{message_id} not done after {timeout:.0f}s: {message}\n{stack.log('worker')[-3000:]}")
        time.sleep(0.3)
    return message


def balance(stack, account_id: str, headers: dict) -> tuple[str, str]:
    shown = requests.get(f"{stack.url}/v1/accounts/{account_id}/balance", headers=headers, timeout=10).json()
    return shown["balance"], shown["held"]


def test_a_filtered_text_arrives_from_the_toll_free_number_for_its_segments_plus_one_credit(stack, database):
    # given an account with reprocessing on, whose local number's texts carriers filter (30007)
    account_id, headers, local, toll_free = reprocessing_account(stack, 1, enabled=True)
    requests.post(f"{stack.simulator_url}/_sim/config", json={"sender_outcomes": {local: FILTERED}},
                  timeout=10).raise_for_status()

    # when it sends a two-segment text from its local number
    original_id = send(stack, headers, local)

    # then the text ends undelivered with 30007, and its resend, linked both ways, is delivered from toll-free
    original = wait_for(stack, headers, original_id, lambda m: settled(m) and m["reprocessed_as"])
    resend = wait_for(stack, headers, original["reprocessed_as"], settled)
    assert (original["status"], original["error_code"], original["segments"]) == ("undelivered", 30007, 2)
    assert (resend["status"], resend["from"], resend["to"], resend["body"]) == (
        "delivered", toll_free, "+14155550100", BODY)
    assert resend["reprocessed_from"] == original_id
    twilio = sorted((m["from"], m["status"], m["error_code"]) for m in simulated(stack)["messages"]
                    if m["body"] == BODY and m["from"] in (local, toll_free))
    assert twilio == [(local, "undelivered", 30007), (toll_free, "delivered", None)]

    # and the account paid the original's two segments and exactly one credit for the resend
    assert (original["credits_charged"], resend["credits_charged"]) == ("2", "1")
    assert balance(stack, account_id, headers) == ("7", "0")
    verify = ledger_verify(stack)
    assert verify.returncode == 0, verify.stdout + verify.stderr


def test_with_the_setting_off_a_filtered_text_is_not_resent(stack, database):
    # given an account with a toll-free number but reprocessing off, whose local number's texts carriers filter
    account_id, headers, local, toll_free = reprocessing_account(stack, 2, enabled=False)
    requests.post(f"{stack.simulator_url}/_sim/config", json={"sender_outcomes": {local: FILTERED}},
                  timeout=10).raise_for_status()

    # when it sends a text from its local number and the text is filtered and settled
    original_id = send(stack, headers, local)
    original = wait_for(stack, headers, original_id, settled)

    # then nothing was resent (the resend would have been made with the settlement): Twilio saw only the original
    assert (original["status"], original["error_code"], original["reprocessed_as"]) == ("undelivered", 30007, None)
    with database.unit_of_work() as session:
        assert session.scalars(select(Message.id).where(Message.reprocessed_from == original_id)).all() == []
    assert [m["from"] for m in simulated(stack)["messages"] if m["from"] in (local, toll_free)] == [local]
    assert balance(stack, account_id, headers) == ("8", "0")
