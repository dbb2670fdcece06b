"""Voice over the real processes: web, worker, Twilio simulator (its clock compressed: a call-minute in 30 ms),
Redis, PostgreSQL. Each test uses its own accounts and reads the database directly to check the money."""

import random
import subprocess
import sys
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
import requests
from sqlalchemy import func, select
from twilio.request_validator import RequestValidator

from shared.config import SIMULATOR_ACCOUNT_SID, SIMULATOR_AUTH_TOKEN
from shared.models import Account, Call, Entry
from tests.support.stack import ADMIN_KEY, ROOT, Stack

pytestmark = pytest.mark.e2e

OPERATOR = {"Authorization": f"Bearer {ADMIN_KEY}"}
SIM_SID, SIM_TOKEN = SIMULATOR_ACCOUNT_SID, SIMULATOR_AUTH_TOKEN  # the deployment's credentials in the stack
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




def post_signed(stack, path: str, form: dict, *, token: str = SIM_TOKEN) -> requests.Response:
    """POST a webhook as Twilio would, signed with `token` over the stack's public URL."""
    url = f"{stack.url}{path}"
    signature = RequestValidator(token).compute_signature(url, form)
    return requests.post(url, data=form, headers={"X-Twilio-Signature": signature}, timeout=10)


def test_duplicated_and_reordered_callbacks_charge_each_call_once(stack, database, broker, sim):
    # given every callback delivered twice and a call's callbacks sent last first (completed before ringing)
    sim(duplicate_callback_rate=1, out_of_order_rate=1, call_min_seconds=30, call_max_seconds=150)
    account_id, headers, number = new_account(stack, "500")

    # when 20 calls are placed
    ids = [place(stack, headers, number, f"+1415558{i:04d}", max_minutes=5) for i in range(20)]
    calls = wait_for_calls(database, stack, broker, ids, lambda cs: settled(cs) and all(
        c.status == "completed" for c in cs))

    # then each ended completed (a late ringing moved nothing back) and was charged once, its minutes exactly
    by_sid = {c["sid"]: c for c in simulated_calls(stack)["calls"]}
    total = sum(-(-by_sid[c.twilio_sid]["duration"] // 60) * 2000 for c in calls.values())
    assert sum(c.credits_charged for c in calls.values()) == total
    assert balance_of(database, account_id) == (500_000 - total, 0, "active")
    with database.unit_of_work() as session:
        charges = session.scalar(select(func.count()).select_from(Entry).where(Entry.reference.in_(ids)))
    assert charges == 20
    verified = ledger_verify(stack)
    assert verified.returncode == 0, verified.stdout + verified.stderr


def test_a_final_report_before_ringing_and_again_after_settles_once(stack, database, broker, sim):
    # given a placed call whose simulator never answers on its own
    sim(ring_seconds=100000)
    account_id, headers, number = new_account(stack, "50")
    call_id = place(stack, headers, number, "+14155550121", max_minutes=5)
    call = wait_for_calls(database, stack, broker, [call_id], lambda cs: all(c.twilio_sid for c in cs))[call_id]
    path = f"/webhooks/twilio/call-status?call={call_id}"
    report = {"AccountSid": SIM_SID, "CallSid": call.twilio_sid, "CallStatus": "completed", "CallDuration": "61"}

    # when `completed` comes, then `ringing`, then `completed` again
    answers = [post_signed(stack, path, form).status_code
               for form in (report, {**report, "CallStatus": "ringing", "CallDuration": "0"}, report)]

    # then the call is completed and charged 2 minutes once
    assert answers == [200, 200, 200]
    call = wait_for_calls(database, stack, broker, [call_id], settled)[call_id]
    assert (call.status, call.minutes_billed, call.credits_charged) == ("completed", 2, 4000)
    assert balance_of(database, account_id) == (46_000, 0, "active")


def test_forged_call_callbacks_are_refused_and_change_nothing(stack, database, broker, sim):
    # given a placed call not answered yet (it reports nothing before it is), and another Twilio account
    sim(ring_seconds=100000)
    account_id, headers, number = new_account(stack, "50")
    call_id = place(stack, headers, number, "+14155550122", max_minutes=5)
    call = wait_for_calls(database, stack, broker, [call_id], lambda cs: all(c.twilio_sid for c in cs))[call_id]
    path = f"/webhooks/twilio/call-status?call={call_id}"
    report = {"AccountSid": SIM_SID, "CallSid": call.twilio_sid, "CallStatus": "completed", "CallDuration": "3000"}

    # when reports come signed with a wrong token, naming another account, about another sid, or unsigned
    forged = [post_signed(stack, path, report, token="not-the-token"),
              post_signed(stack, path, {**report, "AccountSid": "AC" + "99" * 16}, token="not-the-token"),
              post_signed(stack, path, {**report, "CallSid": "CA" + "0" * 32}),
              requests.post(f"{stack.url}{path}", data=report, timeout=10)]

    # then each is a 403 and the call is as it was: nothing charged, its hold still pending
    assert [response.status_code for response in forged] == [403, 403, 403, 403]
    with database.unit_of_work() as session:
        untouched = session.get(Call, call_id)
        assert (untouched.status, untouched.credits_charged) == (call.status, None)
    balance, held, _ = balance_of(database, account_id)
    assert (balance, held) == (50_000, 5 * 2000)


def own_subaccount(stack, account_id: str, headers: dict) -> tuple[str, str]:
    """A Twilio subaccount at the simulator, saved as the account's own credentials: (AccountSid, auth token)."""
    subaccount = requests.post(f"{stack.simulator_url}/_sim/accounts", json={"friendly_name": "Own"}, timeout=10)
    own = (subaccount.json()["sid"], subaccount.json()["auth_token"])
    saved = requests.put(f"{stack.url}/v1/accounts/{account_id}/twilio-credentials", headers=headers, timeout=10,
                         json={"account_sid": own[0], "auth_token": own[1]})
    assert saved.status_code == 200, saved.text
    return own


def test_a_call_through_the_accounts_own_subaccount_is_charged_what_twilio_says_not_what_the_account_signs(
        stack, database, broker, sim):
    # given an account placing calls through its own Twilio subaccount, whose token it holds; calls talk 61 s
    sim(call_min_seconds=61, call_max_seconds=61)
    account_id, headers, number = new_account(stack, "50")
    own = own_subaccount(stack, account_id, headers)

    # when it places a call and, while it rings, signs "completed after 0 seconds" for it with that token
    call_id = place(stack, headers, number, "+14155550123", max_minutes=5)
    call = wait_for_calls(database, stack, broker, [call_id], lambda cs: all(c.twilio_sid for c in cs))[call_id]
    forged = post_signed(stack, f"/webhooks/twilio/call-status?call={call_id}", token=own[1],
                         form={"AccountSid": own[0], "CallSid": call.twilio_sid, "CallStatus": "completed",
                               "CallDuration": "0"})

    # then it is answered as Twilio's own report would be, and the call is charged what Twilio, asked, says it
    # talked: 61 s, 2 started minutes at 2 credits
    assert forged.status_code == 200, forged.text
    charged = wait_for_calls(database, stack, broker, [call_id], settled)[call_id]
    at_twilio = {c["sid"]: c for c in simulated_calls(stack)["calls"]}[call.twilio_sid]
    assert (at_twilio["account_sid"], at_twilio["duration"]) == (own[0], 61)
    assert (charged.status, charged.duration_seconds, charged.minutes_billed, charged.credits_charged) == (
        "completed", 61, 2, 4000)
    assert balance_of(database, account_id)[:2] == (46_000, 0)


def configure_number(stack, account_id: str, number: str, **fields) -> None:
    response = requests.patch(f"{stack.url}/v1/accounts/{account_id}/numbers/{number.replace('+', '%2B')}",
                              headers=OPERATOR, json=fields, timeout=10)
    assert response.status_code == 200, response.text


def ring(stack, number: str, **fields) -> str:
    response = requests.post(f"{stack.simulator_url}/_sim/calls/inbound", timeout=10, json={
        "from": "+14155550131", "to": number, "url": f"{stack.url}/webhooks/twilio/voice",
        "status_callback": f"{stack.url}/webhooks/twilio/call-status", **fields})
    assert response.status_code == 201, response.text
    return response.json()["sid"]


def inbound_call(database, sid: str, done, *, timeout: float = 30.0) -> Call:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with database.unit_of_work() as session:
            call = session.scalars(select(Call).where(Call.twilio_sid == sid)).first()
            if call is not None and done(call):
                return call
        time.sleep(0.2)
    pytest.fail(f"inbound call {sid} not done: {call and (call.status, call.credits_charged)}")


def test_a_forwarded_call_with_voicemail_and_transcription_costs_three_a_minute_plus_one_plus_four(
        stack, database, sim):
    # given a number forwarding to a phone, with voicemail and transcription
    account_id, headers, number = new_account(stack, "100")
    configure_number(stack, account_id, number, forward_to="+14155550132", voicemail=True, transcribe=True)

    # when a caller is forwarded, talks 150 s, the call is dropped... and a second caller finds the phone busy and
    # leaves a 20 s voicemail
    talked = ring(stack, number, forwarded_seconds=150)
    messaged = ring(stack, number, forwarded_outcome="busy", voicemail_seconds=20)

    # then the first costs 3 minutes x 3 credits, the second 1 (voicemail) + 4 (transcription), shown on the call
    first = inbound_call(database, talked, lambda c: c.status == "completed" and c.credits_charged)
    second = inbound_call(database, messaged, lambda c: c.status == "completed" and c.credits_charged == 5000)
    assert (first.direction, first.minutes_billed, first.credits_charged) == ("inbound", 3, 9000)
    assert second.transcription and second.recording_url
    assert balance_of(database, account_id)[0] == 100_000 - 9000 - 5000
    shown = requests.get(f"{stack.url}/v1/calls/{second.id}", headers=headers, timeout=10).json()
    assert shown["voicemail"]["transcription"] == second.transcription and shown["credits_charged"] == "5"


def test_a_call_forwarded_through_the_accounts_own_subaccount_is_charged_its_leg_as_twilio_records_it(
        stack, database, sim):
    # given a number forwarding to a phone, of an account whose Twilio is its own subaccount (its token signs the
    # call's reports and the dial action, so their durations are not taken on their word)
    account_id, headers, number = new_account(stack, "100")
    own = own_subaccount(stack, account_id, headers)
    configure_number(stack, account_id, number, forward_to="+14155550133")

    # when a caller is forwarded and talks 150 s
    talked = ring(stack, number, forwarded_seconds=150, account_sid=own[0])

    # then the leg is charged as Twilio records it, 3 minutes x 3 credits, once, and the call ends completed
    call = inbound_call(database, talked, lambda c: c.status == "completed" and c.credits_charged, timeout=60)
    assert (call.twilio_account_sid, call.minutes_billed, call.credits_charged) == (own[0], 3, 9000)
    assert balance_of(database, account_id)[0] == 100_000 - 9000


def test_a_forwarded_call_with_voicemail_and_transcription_in_one_call(stack, database, sim):
    # given a number forwarding to a phone, with voicemail and transcription, whose callbacks come twice and last
    # first (the transcription before the recording)
    sim(duplicate_callback_rate=1, out_of_order_rate=1)
    account_id, _, number = new_account(stack, "100")
    configure_number(stack, account_id, number, forward_to="+14155550133", voicemail=True, transcribe=True)

    # when the forwarded phone is not answered and the caller leaves a voicemail
    sid = ring(stack, number, forwarded_outcome="no-answer", voicemail_seconds=40)

    # then the voicemail and its transcription are charged once each: 1 + 4
    call = inbound_call(database, sid, lambda c: c.credits_charged == 5000 and c.transcription)
    assert call.minutes_billed == 0
    time.sleep(1)  # the duplicates have had their chance
    assert balance_of(database, account_id)[0] == 95_000


def test_an_inbound_call_to_a_locked_account_still_rings_through_for_the_grace_minutes(stack, database, sim):
    # given a prepaid account below zero (locked) whose number forwards
    account_id, _, number = new_account(stack, "0")
    configure_number(stack, account_id, number, forward_to="+14155550134")
    charged = requests.post(f"{stack.url}/v1/accounts/{account_id}/grants", headers=OPERATOR, timeout=10,
                            json={"credits": "1", "kind": "purchase"})
    assert charged.status_code == 201
    with database.unit_of_work() as session:
        session.get(Account, account_id).status = "locked"

    # when someone calls and talks 10 minutes
    sid = ring(stack, number, forwarded_seconds=600)

    # then the call is forwarded anyway, cut at the grace (5 minutes), and charged: the account goes negative
    call = inbound_call(database, sid, lambda c: c.status == "completed" and c.credits_charged)
    legs = [c for c in simulated_calls(stack)["calls"] if c["parent_call_sid"] == sid]
    assert [(leg["to"], leg["time_limit"], leg["duration"]) for leg in legs] == [("+14155550134", 300, 300)]
    assert (call.minutes_billed, call.credits_charged) == (5, 15000)
    assert balance_of(database, account_id) == (1000 - 15000, 0, "locked")


def create_broadcast(stack, headers: dict, number: str, recipients: list[str], **fields) -> dict:
    response = requests.post(f"{stack.url}/v1/voice-broadcasts", headers=headers, timeout=60, json={
        "name": "Reminder", "from": number, "say": "Service is at ten", "quiet_hours": NO_QUIET_HOURS,
        "recipients": [{"to": to} for to in recipients], **fields})
    assert response.status_code == 202, response.text
    return response.json()


def broadcast_calls(database, broadcast_id: str) -> list[Call]:
    with database.unit_of_work() as session:
        return list(session.scalars(select(Call).where(Call.broadcast_id == broadcast_id)))


def wait_for_broadcast(database, stack, broker, broadcast_id: str, *, timeout: float = 120.0) -> list[Call]:
    ids = [call.id for call in broadcast_calls(database, broadcast_id)]
    calls = wait_for_calls(database, stack, broker, ids, settled, timeout=timeout)
    return list(calls.values())


def test_a_broadcast_to_500_numbers_with_detection_counts_answers_and_charges_them(stack, database, broker, sim):
    # given callees answered by people, machines, or not at all, and an opted-out number among 500
    sim(call_min_seconds=5, call_max_seconds=100, call_outcomes={"completed": 8, "busy": 1, "no-answer": 1},
        answered_by={"human": 3, "machine_end_beep": 2, "fax": 1})
    account_id, headers, number = new_account(stack, "10000")
    recipients = [f"+1415559{i:04d}" for i in range(500)]
    opted = requests.post(f"{stack.url}/v1/opt-outs", headers=headers, json={"phone": recipients[7]}, timeout=10)
    assert opted.status_code in (200, 201), opted.text
    estimate = requests.post(f"{stack.url}/v1/estimate", headers=headers, timeout=10, json={
        "channel": "voice_broadcast", "recipients": 500, "expected_minutes": 2, "machine_detection": True}).json()

    # when a broadcast with machine detection calls them
    created = create_broadcast(stack, headers, number, recipients, machine_detection=True, expected_minutes=2)
    calls = wait_for_broadcast(database, stack, broker, created["id"])

    # then its counts follow AnsweredBy and the outcomes, and each number called cost its minutes x 2 + 0.5
    assert estimate["credits"] == "2250" == str(500 * (2 * 2 + 0.5)).removesuffix(".0")
    by_sid = {c["sid"]: c for c in simulated_calls(stack)["calls"]}
    assert simulated_calls(stack)["duplicates"] == []
    expected = Counter()
    total = 0
    for call in calls:
        if call.status == "skipped":
            expected["skipped"] += 1
            continue
        twilio = by_sid[call.twilio_sid]
        key = {"busy": "busy", "no-answer": "no_answer"}.get(call.status) or (
            "human" if twilio["answered_by"] == "human" else "machine")
        expected[key] += 1
        assert call.credits_charged == -(-twilio["duration"] // 60) * 2000 + 500
        total += call.credits_charged
    view = requests.get(f"{stack.url}/v1/voice-broadcasts/{created['id']}", headers=headers, timeout=10).json()
    assert view["status"] == "completed" and view["counts"]["total"] == 500
    assert {k: v for k, v in view["counts"].items() if v and k != "total"} == dict(expected)
    assert expected["skipped"] == 1 and expected["machine"] and expected["human"] and expected["busy"]
    assert balance_of(database, account_id) == (10_000_000 - total, 0, "active")
    verified = ledger_verify(stack)
    assert verified.returncode == 0, verified.stdout + verified.stderr


def test_pause_holds_the_calls_not_placed_resume_places_them_and_cancel_ends_them(stack, database, broker, sim):
    # given a broadcast created while paused at once (the worker has not taken its calls yet: Twilio is slow)
    sim(latency_ms=300, call_min_seconds=5, call_max_seconds=5)
    _, headers, number = new_account(stack, "1000")
    created = create_broadcast(stack, headers, number, [f"+1415550{i:04d}" for i in range(60)])
    url = f"{stack.url}/v1/voice-broadcasts/{created['id']}"
    paused = requests.post(f"{url}/pause", headers=headers, timeout=10)
    assert paused.status_code == 200 and paused.json()["status"] == "paused", paused.text
    sim(latency_ms=0)

    # when it is resumed, every waiting number is called; a second broadcast is canceled while paused
    resumed = requests.post(f"{url}/resume", headers=headers, timeout=10)
    calls = wait_for_broadcast(database, stack, broker, created["id"])
    other = create_broadcast(stack, headers, number, [f"+1415551{i:04d}" for i in range(3)])
    other_url = f"{stack.url}/v1/voice-broadcasts/{other['id']}"
    requests.post(f"{other_url}/pause", headers=headers, timeout=10)
    canceled = requests.post(f"{other_url}/cancel", headers=headers, timeout=10)
    again = requests.post(f"{other_url}/resume", headers=headers, timeout=10)

    # then the first completed with every call placed once, the second ended, and steering it further is a 409
    assert resumed.status_code == 200
    assert {c.status for c in calls} == {"completed"} and simulated_calls(stack)["duplicates"] == []
    assert canceled.json()["status"] == "canceled" and again.status_code == 409
    ended = wait_for_broadcast(database, stack, broker, other["id"])
    assert all(c.status in ("canceled", "completed") for c in ended)
    assert sum(c.credits_charged for c in ended) == 2000 * sum(c.status == "completed" for c in ended)


def test_another_account_cannot_see_or_steer_a_broadcast(stack, sim):
    _, headers, number = new_account(stack, "100")
    created = create_broadcast(stack, headers, number, ["+14155550141"])
    _, other, _ = new_account(stack, "100")
    url = f"{stack.url}/v1/voice-broadcasts/{created['id']}"
    assert requests.get(url, headers=other, timeout=10).status_code == 404
    assert requests.post(f"{url}/cancel", headers=other, timeout=10).status_code == 404
    assert requests.get(url, headers=headers, timeout=10).status_code == 200


def test_a_worker_killed_mid_broadcast_places_and_charges_no_call_twice(stack, database, broker, sim):
    # given a broadcast of 300 numbers whose calls Twilio answers slowly
    sim(latency_ms=20, call_min_seconds=10, call_max_seconds=200)
    account_id, headers, number = new_account(stack, "5000")
    created = create_broadcast(stack, headers, number, [f"+1415552{i:04d}" for i in range(300)])

    # when the worker is killed -9 while placing them, and started again
    deadline = time.monotonic() + 60
    while sum(c.twilio_sid is not None for c in broadcast_calls(database, created["id"])) < 30:
        assert time.monotonic() < deadline, "the broadcast never started"
        time.sleep(0.05)
    stack.kill_worker()
    sim(latency_ms=0)
    stack.start_worker()
    calls = wait_for_broadcast(database, stack, broker, created["id"])

    # then Twilio saw each number called once, and each call was charged once, its minutes exactly
    placed = simulated_calls(stack)
    assert placed["duplicates"] == []
    by_sid = {c["sid"]: c for c in placed["calls"]}
    total = 0
    for call in calls:
        if call.twilio_sid is None:  # claimed when the worker died, never reached Twilio: failed, free
            assert call.status == "failed" and call.credits_charged == 0
            continue
        assert call.credits_charged == -(-by_sid[call.twilio_sid]["duration"] // 60) * 2000
        total += call.credits_charged
    assert sum(c["to"].startswith("+1415552") for c in placed["calls"]) == sum(c.twilio_sid is not None
                                                                              for c in calls)
    assert balance_of(database, account_id) == (5_000_000 - total, 0, "active")
    verified = ledger_verify(stack)
    assert verified.returncode == 0, verified.stdout + verified.stderr


def test_a_call_parked_while_its_account_was_locked_is_placed_once_it_may_pay_again(stack, database, broker, sim):
    # given an accepted call whose account is locked before the worker takes it
    sim(call_min_seconds=30, call_max_seconds=30)
    account_id, headers, number = new_account(stack, "20")
    stack.kill_worker()
    call_id = place(stack, headers, number, "+14155550151", max_minutes=2)
    with database.unit_of_work() as session:
        session.get(Account, account_id).status = "locked"
    stack.start_worker()
    wait_for_calls(database, stack, broker, [call_id], lambda cs: all(c.status == "parked" for c in cs))

    # when the account is unlocked (credits brought it back) and the sweep comes round
    with database.unit_of_work() as session:
        session.get(Account, account_id).status = "active"
    call = wait_for_calls(database, stack, broker, [call_id], settled)[call_id]

    # then the call was placed once and charged its one minute
    assert (call.status, call.credits_charged) == ("completed", 2000)
    assert [c["to"] for c in simulated_calls(stack)["calls"]].count("+14155550151") == 1


def test_a_broadcast_inside_the_numbers_quiet_hours_calls_nobody_until_they_end(stack, database, broker, sim):
    # given a window that opens two hours from now at the numbers called (Pacific time)
    _, headers, number = new_account(stack, "100")
    local = datetime.now(ZoneInfo("America/Los_Angeles"))
    opening = (local + timedelta(hours=2)).replace(minute=0, second=0, microsecond=0)
    window = {"start": opening.strftime("%H:%M"), "end": (opening + timedelta(hours=1)).strftime("%H:%M")}

    # when a broadcast is created with it
    created = create_broadcast(stack, headers, number, ["+14155550161", "+14155550162"], quiet_hours=window)

    # then each call's job dates it at the window's opening (waited for: a busy machine may take seconds to run the
    # jobs, and an accepted call not yet looked at is otherwise alike), unplaced and uncharged; the sweeper leaves
    # them to their jobs, and Twilio saw none
    deadline = time.monotonic() + 60
    while [c.updated_at for c in broadcast_calls(database, created["id"])] != [opening, opening]:
        assert time.monotonic() < deadline, "the calls were not dated at the window's opening within 60 s"
        time.sleep(0.2)
    stack.enqueue(broker, "sweep_calls")
    time.sleep(2)  # the sweep's chance to enqueue another job, which would place a call now
    calls = broadcast_calls(database, created["id"])
    assert {(c.status, c.twilio_sid, c.hold_id) for c in calls} == {("accepted", None, None)}
    assert all(c.updated_at == opening for c in calls)
    assert not [c for c in simulated_calls(stack)["calls"] if c["to"] in ("+14155550161", "+14155550162")]
    view = requests.get(f"{stack.url}/v1/voice-broadcasts/{created['id']}", headers=headers, timeout=10).json()
    assert (view["status"], view["counts"]["queued"], view["quiet_hours"]) == ("running", 2, window)
