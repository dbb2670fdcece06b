"""Voice over the real processes: web, worker, Twilio simulator (its clock compressed: a call-minute in 30 ms),
Redis, PostgreSQL. Each test uses its own accounts and reads the database directly to check the money."""

import random
import subprocess
import sys
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from sqlalchemy import select

from shared.models import Account, Call
from tests.support.stack import ADMIN_KEY, ROOT, Stack

pytestmark = pytest.mark.e2e

OPERATOR = {"Authorization": f"Bearer {ADMIN_KEY}"}
SIM_TOKEN = "simulator-auth-token"
NO_QUIET_HOURS = {"start": "00:00", "end": "00:00"}
_numbers = iter(range(1000, 9999))


@pytest.fixture(scope="module")
def stack(postgres_server, tmp_path_factory):
    env = {
        "CREDITQ_SWEEP_STALE_SECONDS": "3",
        "TWILIO_SIM_CALL_MINUTE_MS": "30",
        "TWILIO_SIM_RING_SECONDS": "2",
        "TWILIO_SIM_CALLBACK_DELAY_MS": "10",
    }
    with Stack(postgres_server, tmp_path_factory.mktemp("voice"), database_name="e2e_voice", env=env) as running:
        yield running


@pytest.fixture
def sim(stack):
    requests.post(f"{stack.simulator_url}/_sim/reset", timeout=10).raise_for_status()
    yield lambda **knobs: requests.post(f"{stack.simulator_url}/_sim/config", json=knobs,
                                        timeout=10).raise_for_status()
    requests.post(f"{stack.simulator_url}/_sim/reset", timeout=10).raise_for_status()


def new_account(stack, credits: str, *, policy: str = "prepaid") -> tuple[str, dict, str]:
    """An account with one number and `credits` purchased: (id, its auth header, its number)."""
    created = requests.post(f"{stack.url}/v1/accounts", headers=OPERATOR, timeout=10,
                            json={"name": "Voice", "timezone": "UTC", "overdraft": {"policy": policy, "limit": "0"}})
    assert created.status_code == 201, created.text
    account_id, key = created.json()["id"], created.json()["api_key"]
    number = f"+1415556{next(_numbers):04d}"
    added = requests.post(f"{stack.url}/v1/accounts/{account_id}/numbers", headers=OPERATOR, timeout=10,
                          json={"phone": number, "type": "long_code"})
    assert added.status_code == 201, added.text
    if credits != "0":
        granted = requests.post(f"{stack.url}/v1/accounts/{account_id}/grants", headers=OPERATOR, timeout=10,
                                json={"credits": credits, "kind": "purchase"})
        assert granted.status_code == 201, granted.text
    return account_id, {"Authorization": f"Bearer {key}"}, number


def place(stack, headers: dict, number: str, to: str, **fields) -> str:
    response = requests.post(f"{stack.url}/v1/calls", headers=headers, timeout=30,
                             json={"to": to, "from": number, "say": "Hello", **fields})
    assert response.status_code == 202, response.text
    return response.json()["id"]


def wait_for_calls(database, stack, broker, ids, done, *, timeout: float = 90.0) -> dict[str, Call]:
    """Poll until done(calls) holds, enqueueing the calls' sweep every few seconds as the scheduler would."""
    deadline, next_sweep = time.monotonic() + timeout, 0.0
    while True:
        with database.unit_of_work() as session:
            calls = {c.id: c for c in session.scalars(select(Call).where(Call.id.in_(list(ids))))}
        if done(calls.values()):
            return calls
        if time.monotonic() > deadline:
            counts = Counter(c.status for c in calls.values())
            pytest.fail(f"calls not done after {timeout:.0f}s: {dict(counts)}\n{stack.log('worker')[-3000:]}")
        if time.monotonic() > next_sweep:
            stack.enqueue(broker, "sweep_calls")
            next_sweep = time.monotonic() + 2
        time.sleep(0.2)


def settled(calls) -> bool:
    return all(c.credits_charged is not None for c in calls)


def simulated_calls(stack) -> dict:
    return requests.get(f"{stack.simulator_url}/_sim/calls", timeout=30).json()


def balance_of(database, account_id: str) -> tuple[int, int, str]:
    with database.unit_of_work() as session:
        account = session.get(Account, account_id)
        return account.balance, account.held, account.status


def ledger_verify(stack) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "creditq", "ledger", "verify"], env=stack.env, cwd=ROOT,
                          capture_output=True, text=True)


def test_two_hundred_calls_across_five_accounts_are_charged_exactly_their_started_minutes(
        stack, database, broker, sim):
    # given five accounts with plenty of credits, and callees who talk 1 s to 5 minutes, some with detection
    sim(call_min_seconds=1, call_max_seconds=300, answered_by={"human": 1, "machine_end_beep": 1},
        call_outcomes={"completed": 8, "busy": 1, "no-answer": 1})
    accounts = [new_account(stack, "5000") for _ in range(5)]
    rng = random.Random(16)
    plan = [(accounts[i % 5], f"+1415557{i:04d}", rng.random() < 0.3) for i in range(200)]

    # when 200 calls are placed at once
    with ThreadPoolExecutor(16) as pool:
        ids = list(pool.map(lambda p: place(stack, p[0][1], p[0][2], p[1], max_minutes=10,
                                            machine_detection=p[2]), plan))
    calls = wait_for_calls(database, stack, broker, ids, settled)

    # then each is charged ceil(duration / 60) x 2 credits (+0.5 with detection), as Twilio reported it
    by_sid = {c["sid"]: c for c in simulated_calls(stack)["calls"]}
    assert simulated_calls(stack)["duplicates"] == []
    expected = Counter()
    for call in calls.values():
        twilio = by_sid[call.twilio_sid]
        minutes = -(-twilio["duration"] // 60)
        assert call.duration_seconds == twilio["duration"] and call.minutes_billed == minutes
        charge = minutes * 2000 + (500 if call.machine_detection else 0)
        assert call.credits_charged == charge, (call.id, call.status, twilio)
        assert call.status == twilio["status"]
        expected[call.account_id] += charge
    assert len({c.status for c in calls.values()}) > 1  # busy and no-answer came too
    for account_id, _, _ in accounts:
        assert balance_of(database, account_id) == (5_000_000 - expected[account_id], 0, "active")
    verified = ledger_verify(stack)
    assert verified.returncode == 0, verified.stdout + verified.stderr


def test_a_prepaid_account_with_three_credits_gets_a_one_minute_call_charged_two_credits(stack, database, broker, sim):
    # given a prepaid account with 3 credits, and a callee who would talk 10 minutes
    sim(call_min_seconds=600, call_max_seconds=600)
    account_id, headers, number = new_account(stack, "3")

    # when it places a call for up to 10 minutes
    call_id = place(stack, headers, number, "+14155550111", max_minutes=10)
    call = wait_for_calls(database, stack, broker, [call_id], settled)[call_id]

    # then Twilio was told a 60 s limit, the call was cut there and cost 2 credits: the balance never went negative
    twilio = next(c for c in simulated_calls(stack)["calls"] if c["sid"] == call.twilio_sid)
    assert (twilio["time_limit"], twilio["duration"]) == (60, 60)
    assert (call.minutes_held, call.time_limit, call.minutes_billed, call.credits_charged) == (1, 60, 1, 2000)
    assert balance_of(database, account_id) == (1000, 0, "active")
    shown = requests.get(f"{stack.url}/v1/calls/{call_id}", headers=headers, timeout=10).json()
    assert (shown["status"], shown["credits_charged"], shown["minutes_billed"]) == ("completed", "2", 1)
    entries = requests.get(f"{stack.url}/v1/accounts/{account_id}/transactions?kind=call", headers=headers,
                           timeout=10).json()["data"]
    assert [(e["kind"], e["credits"], e["minutes"], e["reference"]) for e in entries] == [("call", "-2", 1, call_id)]


def test_click_to_call_charges_both_legs_at_the_outgoing_rate(stack, database, broker, sim):
    # given a callee who talks 90 s
    sim(call_min_seconds=90, call_max_seconds=90)
    account_id, headers, number = new_account(stack, "100")

    # when a user's phone is bridged to a contact
    call_id = place(stack, headers, number, "+14155550112", say=None, connect_to="+14155550113", max_minutes=5)
    call = wait_for_calls(database, stack, broker, [call_id], settled)[call_id]

    # then the user's phone was called with TwiML dialing the contact, and two legs of 2 minutes were charged
    twilio = next(c for c in simulated_calls(stack)["calls"] if c["sid"] == call.twilio_sid)
    assert twilio["to"] == "+14155550113" and "+14155550112</Dial>" in twilio["twiml"]
    assert (call.legs, call.minutes_billed, call.credits_charged) == (2, 2, 8000)
    assert balance_of(database, account_id) == (92_000, 0, "active")


def test_another_account_cannot_read_a_call(stack, sim):
    # given a call of one account
    _, headers, number = new_account(stack, "100")
    call_id = place(stack, headers, number, "+14155550114")
    _, other, _ = new_account(stack, "100")

    # when another account's key asks for it, then it does not exist for that key
    assert requests.get(f"{stack.url}/v1/calls/{call_id}", headers=other, timeout=10).status_code == 404
    assert requests.get(f"{stack.url}/v1/calls/{call_id}", headers=headers, timeout=10).status_code == 200
