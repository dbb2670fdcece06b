"""The shared short code over the real processes (web, worker, Twilio simulator, Redis, PostgreSQL): a text sent
from it under a keyword, charged at short-code rates with its prefix, and recipients' STOPs texted to it."""

import json
import time

import pytest
import requests
from sqlalchemy import select

from shared.config import SIMULATOR_ACCOUNT_SID, SIMULATOR_AUTH_TOKEN
from shared.models import Account, Message, OptOut
from tests.support.stack import ADMIN_KEY, Stack
from twilio_sim.signature import twilio_signature

pytestmark = [pytest.mark.e2e, pytest.mark.postgres]

CODE = "12345"
CONTACT = "+14155550100"
OPERATOR = {"Authorization": f"Bearer {ADMIN_KEY}"}
BODY_155 = ("Open house this Sunday at 2pm, 14 Elm Street: four bedrooms, a garden and a garage. "
            "Reply to book a private viewing or ask about the price, please. Thanks!")
# Short-code texts cost 2.5 credits a segment, long-code ones 1: a charge at the wrong rate shows.
RATE_CARD = {"name": "e2e", "home_country": "US", "countries": {"US": {"rates": {
    "sms": {"long_code": "1", "toll_free": "1.5", "short_code": "2.5"}, "mms": "2", "call_outgoing": "1",
    "voice_broadcast": "1", "answering_machine_detection": "1", "call_forwarding": "1", "voicemail": "1",
    "transcription": "1", "phone_number": "100"}}}}


@pytest.fixture(scope="module")
def stack(postgres_server, tmp_path_factory):
    directory = tmp_path_factory.mktemp("stack")
    (directory / "rates.json").write_text(json.dumps(RATE_CARD))
    env = {"SHARED_SHORT_CODE": CODE, "RATE_CARD_PATH": str(directory / "rates.json"),
           "CREDITQ_SENDER_RATES": "long_code=1000,toll_free=1000,short_code=1000",
           "TWILIO_SIM_CALLBACK_DELAY_MS": "100"}
    with Stack(postgres_server, directory, database_name="e2e_shared_short_code", worker_processes=1,
               worker_threads=2, env=env) as running:
        yield running


def account_with_keyword(stack, name: str, keyword: str) -> tuple[str, dict]:
    created = requests.post(f"{stack.url}/v1/accounts", headers=OPERATOR, timeout=10, json={"name": name})
    assert created.status_code == 201, created.text
    account_id, key = created.json()["id"], {"Authorization": f"Bearer {created.json()['api_key']}"}
    granted = requests.post(f"{stack.url}/v1/accounts/{account_id}/grants", headers=OPERATOR, timeout=10,
                            json={"credits": "20", "kind": "purchase"})
    assert granted.status_code == 201, granted.text
    patched = requests.patch(f"{stack.url}/v1/accounts/{account_id}", headers=key, timeout=10,
                             json={"settings": {"shared_short_code": {"keyword": keyword}}})
    assert patched.status_code == 200, patched.text
    return account_id, key


def send(stack, key: dict, body: str = BODY_155) -> requests.Response:
    return requests.post(f"{stack.url}/v1/messages", headers=key, timeout=30,
                         json={"to": CONTACT, "from": CODE, "body": body})


def texts_the_code(stack, body: str, sid: str) -> None:
    """The contact texts the shared code: Twilio posts it signed with the deployment's token."""
    params = {"MessageSid": sid, "AccountSid": SIMULATOR_ACCOUNT_SID, "From": CONTACT, "To": CODE, "Body": body}
    url = f"{stack.url}/webhooks/twilio/inbound"
    response = requests.post(url, data=params, timeout=10,
                             headers={"X-Twilio-Signature": twilio_signature(SIMULATOR_AUTH_TOKEN, url, params)})
    assert response.status_code == 200, response.text


def settled(database, message_id: str, timeout: float = 60.0) -> Message:
    deadline = time.monotonic() + timeout
    while True:
        with database.unit_of_work() as session:
            message = session.get(Message, message_id)
            if message.credits_charged is not None:
                return message
        assert time.monotonic() < deadline, f"{message_id} never settled: {message.status}"
        time.sleep(0.3)


def test_a_text_from_the_shared_code_goes_out_with_its_keyword_and_is_charged_at_short_code_rates(stack, database):
    # given an account with the keyword ACME and 20 credits
    account_id, key = account_with_keyword(stack, "Acme", "acme")

    # when it sends a 155-character text from the shared code (one segment alone, two with "ACME: ")
    accepted = send(stack, key)
    assert accepted.status_code == 202, accepted.text
    message = settled(database, accepted.json()["id"])

    # then Twilio got it from the code with the keyword in front, and it cost 2 segments at 2.5 credits
    [twilio] = [m for m in requests.get(f"{stack.simulator_url}/_sim/messages", timeout=10).json()["messages"]
                if m["sid"] == message.twilio_sid]
    assert (twilio["from"], twilio["body"], twilio["num_segments"]) == (CODE, f"ACME: {BODY_155}", 2)
    assert (message.status, message.credits_charged) == ("delivered", 5000)
    with database.unit_of_work() as session:
        account = session.get(Account, account_id)
        assert (account.balance, account.held) == (15_000, 0)


def test_stop_keyword_opts_out_of_one_account_and_a_bare_stop_out_of_every_one(stack, database):
    # given two accounts with keywords on the shared code
    acme_id, acme = account_with_keyword(stack, "Acme 2", "ACME2")
    zen_id, zen = account_with_keyword(stack, "Zen", "ZEN")

    # when the contact texts STOP ACME2 to the code: only Acme 2 may no longer text them
    texts_the_code(stack, "STOP ACME2", "SM" + "1" * 32)
    assert (send(stack, acme).status_code, send(stack, zen).status_code) == (409, 202)

    # when they text a bare STOP: no account on the code may
    texts_the_code(stack, "STOP", "SM" + "2" * 32)
    assert send(stack, zen).status_code == 409
    with database.unit_of_work() as session:
        opted = {(row.account_id, row.phone) for row in session.scalars(
            select(OptOut).where(OptOut.account_id.in_([acme_id, zen_id])))}
    assert opted == {(acme_id, CONTACT), (zen_id, CONTACT)}
