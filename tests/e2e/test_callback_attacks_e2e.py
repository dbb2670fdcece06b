"""Tenants attacking each other through Twilio's webhooks, over the real processes (web, worker, simulator,
Redis, PostgreSQL).

Three tenants: Realty sends with the deployment's Twilio credentials, Church with its own Twilio
subaccount, and Mallory, with a subaccount of her own, forges callbacks about the others' messages and
numbers. Every forgery must be refused with 403 and change nothing (opt-outs, balances, message
statuses compared before and after); a final status Church signs for its own text with its own token
changes nothing until Twilio, asked, confirms it; the genuine callbacks, signed by the simulator with each
sender's own token, must still settle; `creditq ledger verify` stays clean.
"""

import subprocess
import sys
import time
import uuid
from dataclasses import dataclass

import pytest
import requests
from sqlalchemy import select

from shared.config import SIMULATOR_ACCOUNT_SID, SIMULATOR_AUTH_TOKEN
from shared.models import Account, EarlyStatus, Message, OptOut
from tests.support.stack import ADMIN_KEY, ROOT, Stack
from twilio_sim.signature import twilio_signature

pytestmark = pytest.mark.e2e

OPERATOR = {"Authorization": f"Bearer {ADMIN_KEY}"}
DEPLOYMENT = (SIMULATOR_ACCOUNT_SID, SIMULATOR_AUTH_TOKEN)  # what the stack runs with (Stack sets no other)
CONTACT = "+14155550100"
HELD_BACK_MS = 600_000  # the victims' messages get no genuine callback while the attacks run


@dataclass
class Tenant:
    id: str
    headers: dict
    number: str
    twilio: tuple[str, str]  # (AccountSid, auth token) its messages are sent with
    message_sid: str = ""


@pytest.fixture(scope="module")
def stack(postgres_server, tmp_path_factory):
    with Stack(postgres_server, tmp_path_factory.mktemp("stack"), database_name="e2e_attacks", worker_processes=1,
               worker_threads=4, env={"TWILIO_SIM_CALLBACK_DELAY_MS": "100"}) as running:
        yield running


def sim(stack, path: str, **body) -> dict:
    response = requests.post(f"{stack.simulator_url}{path}", json=body, timeout=10)
    response.raise_for_status()
    return response.json()


def new_tenant(stack, name: str, number: str, *, own_subaccount: bool) -> Tenant:
    created = requests.post(f"{stack.url}/v1/accounts", headers=OPERATOR, timeout=10,
                            json={"name": name, "timezone": "UTC", "overdraft": {"policy": "prepaid", "limit": "0"}})
    assert created.status_code == 201, created.text
    account_id, headers = created.json()["id"], {"Authorization": f"Bearer {created.json()['api_key']}"}
    claimed = requests.post(f"{stack.url}/v1/accounts/{account_id}/numbers", headers=headers, timeout=10,
                            json={"phone": number, "type": "long_code"})
    assert claimed.status_code == 201, claimed.text
    granted = requests.post(f"{stack.url}/v1/accounts/{account_id}/grants", headers=OPERATOR, timeout=10,
                            json={"credits": "100", "kind": "purchase"})
    assert granted.status_code == 201, granted.text
    twilio = DEPLOYMENT
    if own_subaccount:
        subaccount = sim(stack, "/_sim/accounts", friendly_name=name)
        twilio = (subaccount["sid"], subaccount["auth_token"])
        saved = requests.put(f"{stack.url}/v1/accounts/{account_id}/twilio-credentials", headers=headers, timeout=10,
                             json={"account_sid": twilio[0], "auth_token": twilio[1]})
        assert saved.status_code == 200, saved.text
    return Tenant(account_id, headers, number, twilio)


def send(stack, tenant: Tenant, body: str) -> str:
    response = requests.post(f"{stack.url}/v1/messages", headers=tenant.headers, timeout=10,
                             json={"to": CONTACT, "from": tenant.number, "body": body})
    assert response.status_code == 202, response.text
    return response.json()["id"]


def wait_for(database, message_id: str, done, timeout: float = 60.0) -> Message:
    deadline = time.monotonic() + timeout
    while True:
        with database.unit_of_work() as session:
            message = session.get(Message, message_id)
        if message is not None and done(message):
            return message
        assert time.monotonic() < deadline, f"{message_id} never got there: {message and message.status}"
        time.sleep(0.2)


@pytest.fixture(scope="module")
def tenants(stack, database) -> dict[str, Tenant]:
    """Realty and Church each have a message at Twilio whose genuine callbacks are held back; Mallory has her
    own proven subaccount."""
    sim(stack, "/_sim/config", callback_delay_ms=HELD_BACK_MS)
    tenants = {
        "realty": new_tenant(stack, "Realty", "+14155550201", own_subaccount=False),
        "church": new_tenant(stack, "Church", "+14155550202", own_subaccount=True),
        "mallory": new_tenant(stack, "Mallory", "+14155550203", own_subaccount=True),
    }
    for victim in (tenants["realty"], tenants["church"]):
        message = wait_for(database, send(stack, victim, f"held back for {victim.id}"), lambda m: m.twilio_sid)
        victim.message_sid = message.twilio_sid
    sim(stack, "/_sim/config", callback_delay_ms=100)
    return tenants


def snapshot(database) -> dict:
    """Everything a forged callback could change: opt-outs, money, every message's state, kept reports."""
    with database.unit_of_work() as session:
        return {
            "opt_outs": sorted((o.account_id, o.phone, o.source) for o in session.scalars(select(OptOut))),
            "accounts": sorted((a.id, a.balance, a.held, a.status) for a in session.scalars(select(Account))),
            "messages": sorted((m.id, m.direction, m.status, m.twilio_status, m.twilio_segments, m.credits_charged,
                                m.error_code) for m in session.scalars(select(Message))),
            "early_statuses": session.scalars(select(EarlyStatus.id)).all(),
        }


def post_signed(stack, path: str, params: dict, token: str, *, sign: dict | None = None) -> requests.Response:
    """POST `params`, with X-Twilio-Signature computed with `token` over `sign` (the same params by default)."""
    url = stack.url + path
    signature = twilio_signature(token, url, sign or params)
    return requests.post(url, data=params, headers={"X-Twilio-Signature": signature}, timeout=10)


def status_params(tenant: Tenant, naming: str, **changes) -> dict:
    return {"MessageSid": tenant.message_sid, "SmsSid": tenant.message_sid, "AccountSid": naming,
            "MessageStatus": "delivered", "SmsStatus": "delivered", "To": CONTACT, "From": tenant.number,
            "NumSegments": "40", "ApiVersion": "2010-04-01", **changes}


def inbound_params(tenant: Tenant, naming: str, body: str = "STOP") -> dict:
    sid = "SM" + uuid.uuid4().hex
    return {"MessageSid": sid, "SmsSid": sid, "AccountSid": naming, "From": CONTACT, "To": tenant.number,
            "Body": body, "NumSegments": "1", "NumMedia": "0", "ApiVersion": "2010-04-01"}


# Each forgery: (victim, AccountSid named, whose token signs, changed field after signing or None).
FORGERIES = {
    "mallorys token, naming her account": ("realty", "mallory", "mallory", None),
    "mallorys token, naming the victims account": ("realty", "realty", "mallory", None),
    "the deployments token, naming mallorys account": ("realty", "mallory", "deployment", None),
    "replayed with the status changed": ("realty", "realty", "realty", ("MessageStatus", "failed")),
    "subaccount: mallorys token, naming her account": ("church", "mallory", "mallory", None),
    "subaccount: mallorys token, naming the victims account": ("church", "church", "mallory", None),
    "subaccount: the deployments token, naming the deployment": ("church", "deployment", "deployment", None),
    "subaccount: the deployments token, naming the victims account": ("church", "church", "deployment", None),
    "subaccount: replayed with the segments changed": ("church", "church", "church", ("NumSegments", "400")),
}


def credentials(tenants: dict[str, Tenant], who: str) -> tuple[str, str]:
    return DEPLOYMENT if who == "deployment" else tenants[who].twilio


@pytest.mark.parametrize("forgery", FORGERIES)
def test_a_forged_status_callback_is_refused_and_changes_nothing(stack, database, tenants, forgery):
    # given a victim's message at Twilio, not final yet, and the state of every tenant
    victim, naming, signer, changed = FORGERIES[forgery]
    params = status_params(tenants[victim], credentials(tenants, naming)[0])
    if changed:  # a genuine callback "sent", replayed with one field changed
        params = status_params(tenants[victim], credentials(tenants, naming)[0], MessageStatus="sent",
                               SmsStatus="sent", NumSegments="1")
    before = snapshot(database)

    # when the forged "delivered, 40 segments" (or the tampered replay) reaches the status webhook
    sent = dict(params, **dict([changed])) if changed else params
    response = post_signed(stack, "/webhooks/twilio/status", sent, credentials(tenants, signer)[1], sign=params)

    # then it is refused, and nothing changed anywhere: no status, no charge, no kept report
    assert response.status_code == 403, response.text
    assert response.headers["Content-Type"].startswith("application/problem+json")
    assert snapshot(database) == before


INBOUND_FORGERIES = {
    "mallorys token, naming her account": ("realty", "mallory", "mallory", False),
    "mallorys token, naming the victims account": ("realty", "realty", "mallory", False),
    "the deployments token, naming mallorys account": ("realty", "mallory", "deployment", False),
    "replayed with the body changed to STOP": ("realty", "realty", "realty", True),
    "subaccount: mallorys token, naming the victims account": ("church", "church", "mallory", False),
    "subaccount: the deployments token, naming the deployment": ("church", "deployment", "deployment", False),
    "subaccount: replayed with the body changed to STOP": ("church", "church", "church", True),
}


@pytest.mark.parametrize("forgery", INBOUND_FORGERIES)
def test_a_forged_inbound_stop_is_refused_and_opts_nobody_out(stack, database, tenants, forgery):
    # given a victim's number and the state of every tenant
    victim, naming, signer, replayed = INBOUND_FORGERIES[forgery]
    genuine = inbound_params(tenants[victim], credentials(tenants, naming)[0], body="see you Sunday" if replayed
                             else "STOP")
    before = snapshot(database)

    # when a STOP to the victim's number, forged or tampered, reaches the inbound webhook
    sent = dict(genuine, Body="STOP")
    response = post_signed(stack, "/webhooks/twilio/inbound", sent, credentials(tenants, signer)[1], sign=genuine)

    # then it is refused: the contact is not opted out and no inbound message is stored
    assert response.status_code == 403, response.text
    assert snapshot(database) == before


def test_a_made_up_account_sid_cannot_be_saved_as_an_accounts_credentials(stack, database, tenants):
    mallory = tenants["mallory"]

    for sid, token in (("AC" + uuid.uuid4().hex, "chosen-token"), (DEPLOYMENT[0], "chosen-token"),
                       (tenants["church"].twilio[0], "chosen-token")):
        response = requests.put(f"{stack.url}/v1/accounts/{mallory.id}/twilio-credentials", headers=mallory.headers,
                                timeout=10, json={"account_sid": sid, "auth_token": token})
        assert response.status_code == 422, response.text
    with database.unit_of_work() as session:
        assert session.get(Account, mallory.id).twilio_account_sid == mallory.twilio[0]


@pytest.mark.parametrize("forged", [
    {"MessageStatus": "failed", "SmsStatus": "failed", "ErrorCode": "30008"},
    {"NumSegments": "0"},
], ids=["failed", "delivered-in-0-segments"])
def test_a_final_status_a_tenant_signs_for_its_own_text_changes_nothing_on_its_word(stack, database, tenants, forged):
    # given Church's message at Twilio, not final yet, and the state of every tenant
    church = tenants["church"]
    params = status_params(church, church.twilio[0], **forged)
    before = snapshot(database)

    # when Church signs a final status for it with its own subaccount's token (which it holds)
    response = post_signed(stack, "/webhooks/twilio/status", params, church.twilio[1])

    # then it is answered as Twilio's would be, and nothing is voided or charged on its word: Twilio is asked
    assert response.status_code == 200, response.text
    assert snapshot(database) == before


def test_a_tenant_with_its_own_subaccount_sends_and_settles_on_what_twilio_confirms(stack, database, tenants):
    # given Church sends through its own Twilio subaccount
    church = tenants["church"]
    with database.unit_of_work() as session:
        balance_before = session.get(Account, church.id).balance

    # when it sends a message and the simulator reports it, signing with the subaccount's token
    message = wait_for(database, send(stack, church, "Service moved to 11am Sunday"),
                       lambda m: m.credits_charged is not None)

    # then Twilio, asked, confirmed the final callback: the message is delivered and charged one credit, once
    assert (message.status, message.twilio_account_sid, message.credits_charged) == ("delivered", church.twilio[0],
                                                                                      1000)
    with database.unit_of_work() as session:
        assert balance_before - session.get(Account, church.id).balance == 1000
    at_twilio = {m["sid"]: m["account_sid"] for m in sim_messages(stack)}
    assert at_twilio[message.twilio_sid] == church.twilio[0]


def sim_messages(stack) -> list[dict]:
    return requests.get(f"{stack.simulator_url}/_sim/messages", timeout=10).json()["messages"]


def test_genuine_inbound_stops_opt_the_contact_out_of_the_numbers_owner_only(stack, database, tenants):
    # when the contact texts STOP to Realty's number (deployment's Twilio) and to Church's (its subaccount)
    for tenant in (tenants["realty"], tenants["church"]):
        response = post_signed(stack, "/webhooks/twilio/inbound", inbound_params(tenant, tenant.twilio[0]),
                               tenant.twilio[1])
        assert response.status_code == 200, response.text

    # then each owner has the opt-out, and nobody else
    with database.unit_of_work() as session:
        opted = sorted((o.account_id, o.phone) for o in session.scalars(select(OptOut)))
    assert opted == sorted([(tenants["realty"].id, CONTACT), (tenants["church"].id, CONTACT)])


def test_the_ledger_verifies_clean_after_the_attacks(stack, tenants):
    verify = subprocess.run([sys.executable, "-m", "creditq", "ledger", "verify"], env=stack.env, cwd=ROOT,
                            capture_output=True, text=True)
    assert verify.returncode == 0, verify.stdout + verify.stderr
