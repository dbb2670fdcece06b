"""`creditq rates publish` against the running processes (web, worker, PostgreSQL, Redis, Twilio simulator): the
web process prices with the new version without a restart, and the text it settles names that version."""

import json
import subprocess
import sys
import time

import pytest
import requests

from shared.messaging.rates import BUNDLED_RATE_CARD
from shared.models import Message
from tests.support.stack import ADMIN_KEY, ROOT, Stack

pytestmark = [pytest.mark.e2e, pytest.mark.postgres]

OPERATOR = {"Authorization": f"Bearer {ADMIN_KEY}"}
SENDER, CONTACT = "+14155550123", "+14155550100"
BOUND_SECONDS = 30  # generous: the processes' check interval (2 s) is what is proven, not a timing


@pytest.fixture(scope="module")
def stack(postgres_server, tmp_path_factory):
    with Stack(postgres_server, tmp_path_factory.mktemp("stack"), database_name="e2e_rate_cards", worker_processes=1,
               worker_threads=2, env={"TWILIO_SIM_CALLBACK_DELAY_MS": "100"}) as running:
        yield running


def creditq(stack, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "creditq", *args], env=stack.env, cwd=ROOT, capture_output=True,
                          text=True, timeout=120)


def estimated_credits(stack, key: dict) -> str:
    answer = requests.post(f"{stack.url}/v1/estimate", headers=key, timeout=10,
                           json={"body": "Open house Sunday", "to": [CONTACT], "from": SENDER})
    assert answer.status_code == 200, answer.text
    return answer.json()["credits_per_recipient"]


def settled(database, message_id: str) -> Message:
    deadline = time.monotonic() + BOUND_SECONDS
    while True:
        with database.unit_of_work() as session:
            message = session.get(Message, message_id)
            if message.credits_charged is not None:
                return message
        assert time.monotonic() < deadline, f"{message_id} never settled: {message.status}"
        time.sleep(0.3)


def test_a_published_card_prices_the_running_processes_texts_and_each_names_its_version(stack, database, tmp_path):
    # given an account with a long-code number, priced by the bundled card that db upgrade loaded as version 1
    created = requests.post(f"{stack.url}/v1/accounts", headers=OPERATOR, timeout=10, json={"name": "Acme"})
    account_id, key = created.json()["id"], {"Authorization": f"Bearer {created.json()['api_key']}"}
    assert requests.post(f"{stack.url}/v1/accounts/{account_id}/grants", headers=OPERATOR, timeout=10,
                         json={"credits": "20", "kind": "purchase"}).status_code == 201
    assert requests.post(f"{stack.url}/v1/accounts/{account_id}/numbers", headers=key, timeout=10,
                         json={"phone": SENDER, "type": "long_code"}).status_code == 201
    assert estimated_credits(stack, key) == "1"

    # when the operator publishes a card where a long-code text costs 2 credits
    card = json.loads(BUNDLED_RATE_CARD.read_text())
    card["countries"]["US"]["rates"]["sms"]["long_code"] = "2"
    (tmp_path / "card.json").write_text(json.dumps(card))
    published = creditq(stack, "rates", "publish", str(tmp_path / "card.json"))
    assert published.returncode == 0, published.stderr
    assert "rate card version 2 published" in published.stdout

    # then the web process estimates with it once it has checked (polled, bounded), without a restart
    deadline = time.monotonic() + BOUND_SECONDS
    while estimated_credits(stack, key) != "2":
        assert time.monotonic() < deadline, "the web process never priced with version 2"
        time.sleep(0.2)

    # and a text sent now is charged 2 credits and names version 2
    accepted = requests.post(f"{stack.url}/v1/messages", headers=key, timeout=30,
                             json={"to": CONTACT, "from": SENDER, "body": "Open house Sunday"})
    assert accepted.status_code == 202, accepted.text
    message = settled(database, accepted.json()["id"])
    assert (message.status, message.credits_charged, message.rate_card_version) == ("delivered", 2000, 2)
    shown = requests.get(f"{stack.url}/v1/messages/{message.id}", headers=key, timeout=10).json()
    assert (shown["credits_charged"], shown["rate_card_version"]) == ("2", 2)

    # and a bad file publishes nothing: one line, exit 2
    (tmp_path / "bad.json").write_text("{")
    refused = creditq(stack, "rates", "publish", str(tmp_path / "bad.json"))
    assert (refused.returncode, refused.stderr.count("\n")) == (2, 1)
    assert creditq(stack, "rates", "list").stdout.splitlines()[0].startswith("2\t")
