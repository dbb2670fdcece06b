"""Compliance over the real processes (web, worker, Twilio simulator, Redis, PostgreSQL): late opt-outs, quiet
hours, and the sender throttle after a campaign.

The wall clock is real here, so no test depends on the hour it runs at: quiet-hours windows are set relative
to the recipient's local time now, and scheduled sends are a few seconds ahead. Assertions are on stored
facts (statuses, send_at, slot_at, charges) and on what the simulator received, never on how long it took.
One stack serves the module; each test has its own account and sender number.
"""

import time
import uuid
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
import requests
from sqlalchemy import select

from shared.config import SIMULATOR_ACCOUNT_SID, SIMULATOR_AUTH_TOKEN
from shared.ledger.expiry import utc
from shared.messaging.opt_outs import FROM_STOP_KEYWORD
from shared.messaging.send_policy import OPTED_OUT
from shared.models import Account, Entry, Message, OptOut
from tests.e2e.test_send_pipeline_e2e import new_account, simulated
from tests.support.stack import Stack
from twilio_sim.signature import twilio_signature

pytestmark = pytest.mark.e2e

SAN_FRANCISCO = ZoneInfo("America/Los_Angeles")  # the zone of +1415 numbers, the recipients here
RECIPIENT = "+14155550100"


@pytest.fixture(scope="module")
def stack(postgres_server, tmp_path_factory):
    env = {
        # a long code sends 10 segments a second: 100 texts book 10 s of its time, most of them a slot ahead
        "CREDITQ_SENDER_RATES": "long_code=10,toll_free=1000,short_code=1000",
        "CREDITQ_SWEEP_STALE_SECONDS": "2",  # the sweeper at its most eager
        "TWILIO_SIM_CALLBACK_DELAY_MS": "50",
    }
    with Stack(postgres_server, tmp_path_factory.mktemp("stack"), database_name="e2e_compliance", env=env) as running:
        yield running


def set_account(stack, account_id: str, headers: dict, **settings) -> None:
    response = requests.patch(f"{stack.url}/v1/accounts/{account_id}", headers=headers, json=settings, timeout=10)
    assert response.status_code == 200, response.text


def quiet_now() -> tuple[dict, datetime]:
    """A window whose sending hours open an hour from now in San Francisco (so now is quiet there), and the
    instant they open."""
    opens = (datetime.now(SAN_FRANCISCO) + timedelta(hours=1)).replace(second=0, microsecond=0)
    closes = opens + timedelta(hours=1)
    return {"start": opens.strftime("%H:%M"), "end": closes.strftime("%H:%M")}, opens.astimezone(UTC)


def send(stack, headers: dict, sender: str, body: str, **fields) -> str:
    response = requests.post(f"{stack.url}/v1/messages", headers=headers, timeout=10,
                             json={"to": RECIPIENT, "from": sender, "body": body, **fields})
    assert response.status_code == 202, response.text
    return response.json()["id"]


def stored(database, message_id: str) -> Message:
    with database.unit_of_work() as session:
        return session.get(Message, message_id)


def wait_for(database, stack, broker, message_id: str, done, *, timeout: float = 60.0) -> Message:
    """Poll the message until done(message), enqueueing a sweep every 2 s as the scheduler would."""
    deadline, next_sweep = time.monotonic() + timeout, 0.0
    while not done(message := stored(database, message_id)):
        assert time.monotonic() < deadline, (message.status, stack.log("worker")[-3000:])
        if time.monotonic() > next_sweep:
            stack.enqueue(broker, "sweep")
            next_sweep = time.monotonic() + 2
        time.sleep(0.2)
    return message


def received(stack, sender: str) -> list[dict]:
    return [m for m in simulated(stack)["messages"] if m["from"] == sender]


def usage_of(database, message_id: str) -> list[int]:
    with database.unit_of_work() as session:
        return list(session.scalars(select(Entry.amount).where(Entry.reference == message_id)))


def inbound(stack, sender: str, body: str) -> None:
    """A text from the recipient to `sender`, as Twilio delivers it: form-encoded, signed with the account's token."""
    sid = "SM" + uuid.uuid4().hex
    params = {"MessageSid": sid, "SmsSid": sid, "AccountSid": SIMULATOR_ACCOUNT_SID, "From": RECIPIENT,
              "To": sender, "Body": body, "NumSegments": "1", "NumMedia": "0", "ApiVersion": "2010-04-01"}
    url = f"{stack.url}/webhooks/twilio/inbound"
    response = requests.post(url, data=params, timeout=10,
                             headers={"X-Twilio-Signature": twilio_signature(SIMULATOR_AUTH_TOKEN, url, params)})
    assert response.status_code == 200, response.text


def test_a_scheduled_text_to_a_recipient_who_texts_stop_before_its_time_is_canceled_unsent_and_uncharged(
        stack, database, broker):
    # given an account without quiet hours, and a text scheduled 5 seconds ahead
    account_id, headers, sender = new_account(stack, 7001, "100")
    set_account(stack, account_id, headers, quiet_hours={"start": "00:00", "end": "00:00"})
    message_id = send(stack, headers, sender, "Open house at 5",
                      send_at=(datetime.now(UTC) + timedelta(seconds=5)).isoformat())
    assert stored(database, message_id).status == "scheduled"

    # when the recipient texts STOP to the number before then
    inbound(stack, sender, "STOP")
    with database.unit_of_work() as session:
        assert session.scalar(select(OptOut.source).where(OptOut.account_id == account_id,
                                                          OptOut.phone == RECIPIENT)) == FROM_STOP_KEYWORD

    # then at its time the text is canceled with the reason, never reaches Twilio, and costs nothing
    message = wait_for(database, stack, broker, message_id, lambda m: m.status not in ("scheduled", "accepted")
                       and datetime.now(UTC) > utc(m.send_at) + timedelta(seconds=2))
    assert (message.status, message.error_message, message.twilio_sid) == ("canceled", OPTED_OUT, None)
    assert message.credits_charged in (None, 0) and usage_of(database, message_id) == []
    assert received(stack, sender) == []
    with database.unit_of_work() as session:
        assert (session.get(Account, account_id).balance, session.get(Account, account_id).held) == (100_000, 0)


def test_a_campaign_text_in_the_recipients_quiet_hours_waits_for_the_accounts_window_to_open(stack, database):
    # given an account whose window opens an hour from now in the recipient's zone (so it is quiet now)
    account_id, headers, sender = new_account(stack, 7002, "100")
    window, opens = quiet_now()
    set_account(stack, account_id, headers, quiet_hours=window)

    # when a campaign (no window of its own) is posted to a recipient there
    response = requests.post(f"{stack.url}/v1/campaigns", headers=headers, timeout=30, json={
        "name": "Open house", "from": sender, "recipients": [{"to": RECIPIENT}], "body": "Open house at 5"})
    assert response.status_code == 202, response.text
    campaign_id = response.json()["id"]

    # then its text waits, scheduled for the window's opening in the recipient's local time
    deadline = time.monotonic() + 30
    while not (messages := list_messages(database, campaign_id)):
        assert time.monotonic() < deadline, "the campaign made no message"
        time.sleep(0.2)
    [message] = messages
    assert (message.status, utc(message.send_at)) == ("scheduled", opens)
    assert received(stack, sender) == []


def list_messages(database, campaign_id: str) -> list[Message]:
    with database.unit_of_work() as session:
        return list(session.scalars(select(Message).where(Message.campaign_id == campaign_id)))


@pytest.mark.parametrize(("scope", "held"), [("automated", False), ("all", True)])
def test_an_immediate_single_send_in_quiet_hours_goes_at_once_unless_the_scope_is_all(stack, database, broker, scope,
                                                                                      held):
    # given an account whose window opens an hour from now in the recipient's zone, with the given scope
    account_id, headers, sender = new_account(stack, 7003 + held, "100")
    window, opens = quiet_now()
    set_account(stack, account_id, headers, quiet_hours=window, quiet_hours_scope=scope)

    # when a text is sent now (no send_at: a person replying)
    message_id = send(stack, headers, sender, f"Sure, see you there ({scope})")

    # then with `automated` it reaches Twilio at once; with `all` it waits for the window's opening
    if held:
        message = wait_for(database, stack, broker, message_id, lambda m: m.status == "scheduled")
        assert utc(message.send_at) == opens
        assert received(stack, sender) == [] and usage_of(database, message_id) == []
    else:
        message = wait_for(database, stack, broker, message_id, lambda m: m.credits_charged is not None)
        assert (message.status, message.send_at, message.credits_charged) == ("delivered", None, 1000)
        assert [m["body"] for m in received(stack, sender)] == [f"Sure, see you there ({scope})"]


def test_after_a_hundred_texts_from_a_long_code_the_next_single_send_is_booked_a_slot_at_once(stack, database, broker):
    # given a campaign of 100 texts from one long code (10 segments a second), all gone out
    account_id, headers, sender = new_account(stack, 7010, "500")
    recipients = [{"to": f"+1415555{1000 + n:04d}"} for n in range(100)]
    response = requests.post(f"{stack.url}/v1/campaigns", headers=headers, timeout=30, json={
        "name": "Spring listings", "from": sender, "recipients": recipients, "body": "New listings this spring",
        "quiet_hours": {"start": "00:00", "end": "00:00"}})
    assert response.status_code == 202, response.text
    deadline, next_sweep = time.monotonic() + 90, 0.0
    while len(received(stack, sender)) < 100:  # swept as eagerly as the scheduler could while they go out
        assert time.monotonic() < deadline, len(received(stack, sender))
        if time.monotonic() > next_sweep:
            stack.enqueue(broker, "sweep")
            next_sweep = time.monotonic() + 1
        time.sleep(0.2)

    # when a 101st text is sent from the number, and beside it a first from a number that sent nothing
    _, fresh_headers, fresh_sender = new_account(stack, 7011, "10")
    message_id = send(stack, headers, sender, "Call me back")
    fresh_id = send(stack, fresh_headers, fresh_sender, "Call me back")

    # then its slot is booked as soon after its acceptance as the fresh number's (not behind slots the sweeper
    # booked: the workers' pace, whatever the machine's load, is the same for both), and it goes
    message = wait_for(database, stack, broker, message_id, lambda m: m.twilio_sid is not None)
    fresh = wait_for(database, stack, broker, fresh_id, lambda m: m.twilio_sid is not None)
    assert message.slot_at is not None and fresh.slot_at is not None
    waited = utc(message.slot_at) - utc(message.created_at)
    assert waited < utc(fresh.slot_at) - utc(fresh.created_at) + timedelta(seconds=2), waited
    assert any(m["body"] == "Call me back" for m in received(stack, sender))
    assert len(received(stack, sender)) == 101
