"""Secrets over the real processes, on SQLite and on PostgreSQL: what a copy of the database or the logs give away.

One run per database drives the stack as customers and the operator would — accounts created (one under an
Idempotency-Key, replayed), an account's own Twilio credentials and a dunning site's saved and used, card
numbers offered as payment methods, messages sent — then stops every process and reads what is left: a dump
of the database (the SQLite file with its WAL, or pg_dump) and every process's log.
"""

import secrets
import time
from dataclasses import dataclass, field

import pytest
import requests

from shared.config import SIMULATOR_ACCOUNT_SID
from tests.support.stack import ADMIN_KEY, SECRET_KEY, Stack

pytestmark = pytest.mark.e2e

OPERATOR = {"Authorization": f"Bearer {ADMIN_KEY}"}
DEPLOYMENT_TOKEN = "deployment-token-" + secrets.token_hex(12)
ACCOUNT_TOKEN = "account-token-" + secrets.token_hex(12)
OWN_ACCOUNT_SID = "AC" + secrets.token_hex(16)  # the account's own subaccount, made known to the simulator
SITE_TOKEN = "site-token-" + secrets.token_hex(12)
CARD_NUMBERS = ("4242 4242 4242 4242", "4000-0566-5566-5556", "5555555555554444")
FINAL = ("delivered", "undelivered", "failed")


@dataclass
class Run:
    account_keys: list[str]
    created: dict  # the first answer to the account creation sent with an Idempotency-Key
    replayed: requests.Response  # the same request again
    replayed_key_works: int  # status of a read with the replayed key
    refusals: list[requests.Response] = field(default_factory=list)  # card numbers as payment methods
    paid: requests.Response | None = None  # a purchase with a gateway token
    rejected: dict = field(default_factory=dict)  # the message sent with the account's own (wrong) token
    delivered: str | None = None  # the message sent with the deployment's credentials
    dump: bytes = b""
    logs: dict[str, str] = field(default_factory=dict)


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def run(request, tmp_path_factory) -> Run:
    postgres = request.getfixturevalue("postgres_server") if request.param == "postgres" else None
    env = {"TWILIO_AUTH_TOKEN": DEPLOYMENT_TOKEN, "TWILIO_SIM_CALLBACK_DELAY_MS": "50",
           "CREDITQ_SENDER_RATES": "long_code=1000,toll_free=1000,short_code=1000"}
    stack = Stack(postgres, tmp_path_factory.mktemp(f"secrets-{request.param}"), database_name="e2e_secrets",
                  env=env)
    with stack:
        result = _drive(stack)
    # every process stopped: its log is complete and the database closed
    result.dump, result.logs = stack.dump(), stack.logs()
    return result


def _drive(stack: Stack) -> Run:
    url = stack.url
    account = {"name": "Grace Church", "timezone": "America/Chicago",
               "overdraft": {"policy": "prepaid", "limit": "0"}}
    created = requests.post(f"{url}/v1/accounts", json=account, timeout=10,
                            headers={**OPERATOR, "Idempotency-Key": "create-grace"})
    assert created.status_code == 201, created.text
    replayed = requests.post(f"{url}/v1/accounts", json=account, timeout=10,
                             headers={**OPERATOR, "Idempotency-Key": "create-grace"})
    own_id, own_key = created.json()["id"], created.json()["api_key"]
    own = {"Authorization": f"Bearer {own_key}"}
    replayed_key = replayed.json().get("api_key")
    key_check = requests.get(f"{url}/v1/accounts/{own_id}/balance", timeout=10,
                             headers={"Authorization": f"Bearer {replayed_key}"})
    other = requests.post(f"{url}/v1/accounts", json={**account, "name": "Harbor Realty"}, headers=OPERATOR,
                          timeout=10)
    assert other.status_code == 201, other.text
    other_id, other_key = other.json()["id"], other.json()["api_key"]
    result = Run(account_keys=[own_key, other_key], created=created.json(), replayed=replayed,
                 replayed_key_works=key_check.status_code)

    for n, account_id in enumerate((own_id, other_id)):
        number = requests.post(f"{url}/v1/accounts/{account_id}/numbers", headers=OPERATOR, timeout=10,
                               json={"phone": f"+1415555010{n}", "type": "long_code"})
        assert number.status_code == 201, number.text
        grant = requests.post(f"{url}/v1/accounts/{account_id}/grants", headers=OPERATOR, timeout=10,
                              json={"credits": "100", "kind": "purchase"})
        assert grant.status_code == 201, grant.text

    subaccount = requests.post(f"{stack.simulator_url}/_sim/accounts", timeout=10,
                               json={"sid": OWN_ACCOUNT_SID, "auth_token": ACCOUNT_TOKEN})
    assert subaccount.status_code == 201, subaccount.text
    credentials = requests.put(f"{url}/v1/accounts/{own_id}/twilio-credentials", headers=own, timeout=10,
                               json={"account_sid": OWN_ACCOUNT_SID, "auth_token": ACCOUNT_TOKEN})
    assert credentials.status_code == 200, credentials.text
    site = requests.put(f"{url}/v1/dunning/integrations/default", headers=OPERATOR, timeout=10,
                        json={"from": "+15005550006", "account_sid": SIMULATOR_ACCOUNT_SID,
                              "auth_token": SITE_TOKEN})
    assert site.status_code == 200, site.text

    for n, card in enumerate(CARD_NUMBERS):
        result.refusals.append(requests.post(f"{url}/v1/accounts/{own_id}/purchases", timeout=10,
                                             headers={**own, "Idempotency-Key": f"card-{n}"},
                                             json={"credits": "100", "payment_method": card}))
        result.refusals.append(requests.put(f"{url}/v1/accounts/{own_id}/auto-recharge", headers=own, timeout=10,
                                            json={"enabled": True, "threshold": "10", "credits": "100",
                                                  "payment_method": card}))
    result.paid = requests.post(f"{url}/v1/accounts/{own_id}/purchases", headers=own, timeout=10,
                                json={"credits": "100", "payment_method": "pm_card_visa"})

    # the account's own subaccount is then closed at Twilio (the simulator forgets it): sending with its token
    # gets 20003 and the account is blocked, which proves the stored token was decrypted and really used
    assert requests.post(f"{stack.simulator_url}/_sim/reset", timeout=10).status_code == 200
    rejected = requests.post(f"{url}/v1/messages", headers=own, timeout=10,
                             json={"to": "+14155550199", "from": "+14155550100", "body": "Service at 11"})
    sent = requests.post(f"{url}/v1/messages", timeout=10, headers={"Authorization": f"Bearer {other_key}"},
                         json={"to": "+14155550198", "from": "+14155550101", "body": "Open house at 2"})
    assert rejected.status_code == 202 and sent.status_code == 202, (rejected.text, sent.text)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and (result.rejected.get("status") != "parked" or result.delivered not in FINAL):
        time.sleep(0.2)
        result.rejected = requests.get(f"{url}/v1/messages/{rejected.json()['id']}", headers=own, timeout=10).json()
        result.delivered = requests.get(f"{url}/v1/messages/{sent.json()['id']}", timeout=10,
                                        headers={"Authorization": f"Bearer {other_key}"}).json()["status"]
    return result


def _plain_secrets(run: Run) -> dict[str, str]:
    cards = {f"card {card}": card for card in CARD_NUMBERS}
    cards |= {f"card {card} (digits)": card.replace(" ", "").replace("-", "") for card in CARD_NUMBERS}
    return {**{f"account key {n}": key for n, key in enumerate(run.account_keys)},
            "account auth token": ACCOUNT_TOKEN, "dunning site auth token": SITE_TOKEN, **cards}


def test_the_run_did_what_it_claims(run):
    # the secrets below were really handed over and used, so their absence means something
    assert run.paid.status_code == 201 and run.paid.json()["status"] == "succeeded", run.paid.text
    assert run.rejected["status"] == "parked" and "20003" in run.rejected["error_message"]
    assert run.delivered == "delivered"


def test_an_idempotent_replay_answers_the_same_account_key_and_it_works(run):
    assert run.replayed.status_code == 201 and run.replayed.headers.get("Idempotent-Replayed") == "true"
    assert run.replayed.json() == run.created
    assert run.replayed_key_works == 200


def test_a_card_number_as_payment_method_is_refused_and_never_repeated(run):
    assert [refusal.status_code for refusal in run.refusals] == [422] * len(run.refusals)
    for refusal in run.refusals:
        assert refusal.headers["Content-Type"].startswith("application/problem+json")
        assert "payment_method" in refusal.json()["errors"]
        for card in CARD_NUMBERS:
            assert card not in refusal.text and card.replace(" ", "").replace("-", "") not in refusal.text


def test_a_dump_of_the_database_holds_no_account_key_auth_token_or_card_number(run):
    # given the dump holds the run's data (the accounts, and ciphertext where the secrets are)
    assert run.created["id"].encode() in run.dump and b"gAAAAA" in run.dump
    # then not one secret in plain text
    leaked = [name for name, value in _plain_secrets(run).items() if value.encode() in run.dump]
    assert leaked == []


def test_no_log_line_of_the_run_holds_a_key_token_or_card_number(run):
    # given every process logged (web, worker, simulator, migrations)
    assert {"web", "worker", "twilio-sim", "db-upgrade"} <= set(run.logs)
    values = {**_plain_secrets(run), "operator key": ADMIN_KEY, "secret key": SECRET_KEY,
              "deployment auth token": DEPLOYMENT_TOKEN}
    leaked = [(name, process) for process, text in run.logs.items() for name, value in values.items()
              if value in text]
    assert leaked == []
