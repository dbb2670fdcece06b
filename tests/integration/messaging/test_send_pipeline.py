"""The send pipeline's domain steps against the in-process Twilio simulator, on SQLite and PostgreSQL.

Every step is run twice somewhere to show a replay changes nothing.
"""

import threading
import time
from datetime import UTC, datetime, timedelta

import fakeredis
import pytest
from sqlalchemy import func, select
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from shared.billing.confirmation import confirm_final_status
from shared.errors import AccountLocked, InsufficientCredits, NotFinalYet, OptedOut, ValidationFailed
from shared.ledger import book
from shared.ledger.accounts import Overdraft, create_account
from shared.ledger.expiry import utc
from shared.ledger.verify import verify
from shared.messaging import parking, sweeper
from shared.messaging.credentials import set_twilio_credentials
from shared.messaging.messages import MessageRequest, accept_message, send_delay_ms
from shared.messaging.opt_outs import opt_out
from shared.messaging.quiet_hours import parse_window
from shared.messaging.rates import default_rate_card
from shared.messaging.send_cap import SendCap
from shared.messaging.send_policy import set_quiet_hours
from shared.messaging.sender_throttle import SenderThrottle
from shared.messaging import sending
from shared.messaging.sending import Claims, SendLater, send_message
from shared.messaging.settlement import settle_message
from shared.messaging.statuses import ToConfirm, record_status
from shared.models import Account, EarlyStatus, Entry, Hold, Message, OptOut, PhoneNumber
from shared.twilio.errors import CredentialsRejected, OutcomeUnknown, TransientTwilioError
from shared.twilio.gateway import TwilioGateway
from shared.twilio.signatures import Credentials
from tests.support.callbacks import twilio_reports
from tests.twilio_sim_fixtures import (  # noqa: F401
    _callback_receiver_server,
    _simulator_server,
    background_loop,
    callback_receiver,
    simulator,
)

SENDER = "+14155550000"
RECIPIENT = "+14155550100"
CARD = default_rate_card()
UNCAPPED = SendCap(young_days=0, per_day=1)  # no account is new enough for the daily cap
FAST = {"long_code": 10_000.0, "toll_free": 10_000.0, "short_code": 10_000.0}


def now() -> datetime:
    return datetime.now(UTC)


@pytest.fixture
def throttle():
    return SenderThrottle(fakeredis.FakeRedis(), FAST)


@pytest.fixture
def gateways(simulator, callback_receiver):  # noqa: F811
    """gateway_for(sid, token) on the simulator; callbacks go to the receiver, not to us."""
    made = {}

    def gateway_for(account_sid=None, auth_token=None):
        key = (account_sid or simulator.account_sid, auth_token or simulator.auth_token)
        if key not in made:
            made[key] = TwilioGateway(*key, simulator.url, callback_receiver.status_url)
        return made[key]

    yield gateway_for
    for gateway in made.values():
        gateway.close()


def make_account(database, credits: int, *, policy: str = "prepaid", sender: str = SENDER) -> str:
    with database.unit_of_work() as session:
        account, _ = create_account(session, name="Acme", timezone="UTC", plan_monthly_credits=0, plan_cycle="monthly",
                                    plan_rollover="none", overdraft=Overdraft(policy), low_balance_threshold=0,
                                    now=now())
        session.add(PhoneNumber(account_id=account.id, phone=sender, type="long_code"))
        if credits:
            book.grant(session, account.id, credits * 1000, "purchase", granted_at=now(),
                         idempotency_key=f"seed:{account.id}")
        return account.id


def accept(database, account_id: str, to: str = RECIPIENT, body: str = "hello", *, sender: str = SENDER,
           **fields) -> str:
    with database.unit_of_work() as session:
        message, _ = accept_message(session, account_id, MessageRequest(to=to, from_=sender, body=body, **fields),
                                    rate_card=CARD, now=now(), cap=UNCAPPED)
        return message.id


def send(database, message_id: str, gateways, throttle, **options) -> str:
    return send_message(database, message_id, gateway_for=gateways, throttle=throttle, hold_ttl_seconds=900,
                        **options)


def message(database, message_id: str) -> Message:
    with database.unit_of_work() as session:
        return session.get(Message, message_id)


def account(database, account_id: str) -> Account:
    with database.unit_of_work() as session:
        return session.get(Account, account_id)


def report(database, message_id: str, status: str, segments: int | None = None) -> None:
    with database.unit_of_work() as session:
        record_status(session, sid=message(database, message_id).twilio_sid, status=status, num_segments=segments,
                      now=now())


def settle(database, message_id: str) -> str:
    with database.unit_of_work() as session:
        return settle_message(session, message_id, rate_card=CARD, now=now()).outcome


def wait_until_sent(simulator, timeout: float = 5.0) -> None:  # noqa: F811
    """Twilio's list only shows a message once it has a sent date."""
    deadline = time.monotonic() + timeout
    while any(m["status"] in ("queued", "accepted") for m in simulator.sent()["messages"]):
        assert time.monotonic() < deadline, "the simulator never sent its messages"
        time.sleep(0.01)


def usage_entries(database, message_id: str) -> int:
    with database.unit_of_work() as session:
        return session.scalar(select(func.count()).select_from(Entry).where(Entry.reference == message_id))


# --- intake ----------------------------------------------------------------------------------------

def test_accept_persists_an_accepted_message_with_its_estimate(database):
    account_id = make_account(database, 10)
    message_id = accept(database, account_id, body="ж" * 71)  # UCS-2, two segments
    stored = message(database, message_id)
    assert (stored.status, stored.segments, stored.encoding, stored.credits_estimated) == ("accepted", 2, "UCS-2", 2000)


def test_accept_names_every_bad_field(database):
    account_id = make_account(database, 10)
    with pytest.raises(ValidationFailed) as refused:
        with database.unit_of_work() as session:
            accept_message(session, account_id, MessageRequest(to="12", from_="+14155559999", body="",
                                                               send_at="tomorrow"), rate_card=CARD, now=now(),
                           cap=UNCAPPED)
    assert set(refused.value.errors) == {"to", "from", "send_at"}


def test_accept_refuses_an_opted_out_recipient(database):
    account_id = make_account(database, 10)
    with database.unit_of_work() as session:
        opt_out(session, account_id, RECIPIENT, "api")
    with pytest.raises(OptedOut):
        accept(database, account_id)


def test_accept_refuses_what_the_account_cannot_pay(database):
    account_id = make_account(database, 1)
    with pytest.raises(InsufficientCredits) as refused:
        accept(database, account_id, body="ж" * 71)
    assert (refused.value.available, refused.value.required) == (1000, 2000)


def test_accept_refuses_a_locked_account(database):
    account_id = make_account(database, 10)
    with database.unit_of_work() as session:
        session.get(Account, account_id).status = "locked"
    with pytest.raises(AccountLocked):
        accept(database, account_id)


def test_send_at_in_the_future_schedules_and_the_sweeper_releases_it_when_due(database, gateways):
    account_id = make_account(database, 10)
    message_id = accept(database, account_id, send_at=(now() + timedelta(seconds=1)).isoformat())
    assert message(database, message_id).status == "scheduled"
    enqueued = []
    sweeper.sweep(database, enqueue=enqueued.append, gateway_for=gateways, rate_card=CARD, now=now(),
                  stale_after=timedelta(seconds=60))
    assert enqueued == []
    sweeper.sweep(database, enqueue=enqueued.append, gateway_for=gateways, rate_card=CARD,
                  now=now() + timedelta(seconds=2), stale_after=timedelta(seconds=60))
    assert enqueued == [message_id] and message(database, message_id).status == "accepted"


def test_one_sweep_releases_every_due_message_not_just_a_batch(database, gateways):
    # given more scheduled messages than a sweeper batch whose time has come (a quiet-hours window opening)
    account_id = make_account(database, 2000)
    ids = [accept(database, account_id, body=f"n{n}", send_at=(now() + timedelta(seconds=1)).isoformat())
           for n in range(sweeper.BATCH + 20)]

    # when one sweep runs after their time
    enqueued = []
    sweeper.sweep(database, enqueue=enqueued.append, gateway_for=gateways, rate_card=CARD,
                  now=now() + timedelta(seconds=2), stale_after=timedelta(seconds=60))

    # then all of them are released and enqueued
    assert sorted(enqueued) == sorted(ids)
    assert {message(database, message_id).status for message_id in ids} == {"accepted"}


def test_a_release_batch_that_fails_after_others_leaves_theirs_released_and_enqueued(database, gateways,
                                                                                     monkeypatch):
    # given more due scheduled messages than a sweeper batch, and a database that fails the second batch
    account_id = make_account(database, 2000)
    ids = [accept(database, account_id, body=f"n{n}", send_at=(now() + timedelta(seconds=1)).isoformat())
           for n in range(sweeper.BATCH + 20)]
    release_batch, calls = sweeper._release_batch, []

    def failing_second(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise OperationalError("UPDATE messages ...", {}, Exception("connection lost"))
        return release_batch(*args, **kwargs)

    monkeypatch.setattr(sweeper, "_release_batch", failing_second)

    # when one sweep runs after their time
    enqueued = []
    sweeper.sweep(database, enqueue=enqueued.append, gateway_for=gateways, rate_card=CARD,
                  now=now() + timedelta(seconds=2), stale_after=timedelta(seconds=60))

    # then the first batch is released and enqueued by that sweep, and the rest wait, scheduled, for the next
    statuses = {message_id: message(database, message_id).status for message_id in ids}
    assert len(enqueued) == sweeper.BATCH and {statuses[message_id] for message_id in enqueued} == {"accepted"}
    assert sorted(message_id for message_id, status in statuses.items() if status == "scheduled") == \
        sorted(set(ids) - set(enqueued))


def test_a_release_whose_first_batch_fails_fails_the_sweep(database, gateways, monkeypatch):
    # given a due scheduled message, and a database that fails the release
    account_id = make_account(database, 10)
    message_id = accept(database, account_id, send_at=(now() + timedelta(seconds=1)).isoformat())
    monkeypatch.setattr(sweeper, "_release_batch", lambda *args, **kwargs: (_ for _ in ()).throw(
        OperationalError("UPDATE messages ...", {}, Exception("connection lost"))))

    # when a sweep runs after its time, then it fails, and the message stays scheduled for the next
    with pytest.raises(OperationalError):
        sweeper.sweep(database, enqueue=[].append, gateway_for=gateways, rate_card=CARD,
                      now=now() + timedelta(seconds=2), stale_after=timedelta(seconds=60))
    assert message(database, message_id).status == "scheduled"


# --- send ------------------------------------------------------------------------------------------

def test_send_holds_marks_and_stores_the_sid_once(database, gateways, throttle, simulator):  # noqa: F811
    account_id = make_account(database, 10)
    message_id = accept(database, account_id)
    assert send(database, message_id, gateways, throttle) == "queued"
    assert send(database, message_id, gateways, throttle) == "skipped"  # a replayed job
    stored = message(database, message_id)
    assert stored.twilio_sid.startswith("SM") and stored.twilio_segments == 1
    assert len(simulator.sent()["messages"]) == 1
    assert account(database, account_id).held == 1000


def test_sends_claimed_together_are_each_claimed_once_and_a_poor_accounts_are_parked_alone(
        database, gateways, throttle, simulator, monkeypatch):  # noqa: F811
    # given three accounts with 10 credits and one with 1, four texts each, one of them asked twice (a redelivered
    # job), sent by 16 threads at once through one process's group-committed claims
    senders = [f"+1415555000{n}" for n in range(4)]
    accounts = [make_account(database, credits, sender=sender) for credits, sender in zip((10, 10, 10, 1), senders)]
    texts = [accept(database, account_id, body=f"text {n}", sender=sender)
             for account_id, sender in zip(accounts, senders) for n in range(4)]
    claims = Claims(database, hold_ttl_seconds=900)
    batches = []
    claim_all = sending._claim_all
    monkeypatch.setattr(sending, "_claim_all", lambda work, requests, *args: (
        batches.append(len(requests)), claim_all(work, requests, *args))[1])
    jobs = texts + texts[:1]
    start, statuses = threading.Barrier(len(jobs)), {}

    def job(n: int, message_id: str) -> None:
        start.wait()
        statuses[n] = send(database, message_id, gateways, throttle, claims=claims)

    threads = [threading.Thread(target=job, args=(n, message_id)) for n, message_id in enumerate(jobs)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    # when it is done: fewer claim transactions than jobs
    assert sum(batches) == len(jobs) and len(batches) < len(jobs)

    # then every text went to Twilio once, but three of the poor account's, parked; the spare job skipped
    assert sorted(statuses.values()) == sorted(["queued"] * 13 + ["parked"] * 3 + ["skipped"])
    at_twilio = [(m["from"], m["body"]) for m in simulator.sent()["messages"]]
    assert len(at_twilio) == len(set(at_twilio)) == 13
    assert [account(database, account_id).held for account_id in accounts] == [4000, 4000, 4000, 1000]
    with database.unit_of_work() as session:
        assert verify(session) == []
        assert session.scalar(select(func.count()).select_from(Hold)) == 13


def test_a_plain_send_claims_and_stores_its_sid_on_connections_alone(database, gateways, throttle, simulator,  # noqa: F811
                                                                       monkeypatch):
    # Given an immediate text of an account with nothing to hold it back, and a count of the ORM sessions made
    account_id = make_account(database, 10)
    message_id = accept(database, account_id)
    made = []
    session_init = Session.__init__
    monkeypatch.setattr(Session, "__init__", lambda session, *args, **kwargs: (
        made.append(session), session_init(session, *args, **kwargs))[1])

    # When it is sent
    assert send(database, message_id, gateways, throttle) == "queued"

    # Then its claim and its sid were written without an ORM session (SQLite takes early reports through one)
    assert len(made) == (0 if database.is_postgres else 1)
    stored = message(database, message_id)
    assert stored.status == "queued" and stored.twilio_sid.startswith("SM") and stored.hold_id is not None
    assert account(database, account_id).held == 1000


@pytest.mark.parametrize("source", ["stop_keyword", "import"])  # the recipient's STOP; the do-not-contact list
def test_a_single_text_whose_recipient_opted_out_after_it_was_accepted_is_canceled_uncharged(
        database, gateways, throttle, simulator, source):  # noqa: F811
    # given a text accepted for a recipient who then opts out (or is listed as do-not-contact)
    account_id = make_account(database, 10)
    message_id = accept(database, account_id)
    with database.unit_of_work() as session:
        opt_out(session, account_id, RECIPIENT, source)

    # when its send job runs
    status = send(database, message_id, gateways, throttle)

    # then it is canceled with the reason, Twilio never sees it and nothing is held or charged
    canceled = message(database, message_id)
    assert (status, canceled.status, canceled.credits_charged) == ("canceled", "canceled", None)
    assert "opted out" in canceled.error_message
    assert simulator.sent()["messages"] == []
    assert (account(database, account_id).held, account(database, account_id).balance) == (0, 10_000)


LATE_EVENING_IN_SAN_FRANCISCO = datetime(2026, 11, 30, 5, 30, tzinfo=UTC)  # 21:30 PST, the recipient's time
NEXT_MORNING_IN_SAN_FRANCISCO = datetime(2026, 11, 30, 16, 0, tzinfo=UTC)  # 08:00 PST


def released_scheduled_send(database, account_id: str) -> str:
    """A single send scheduled for later whose time has come (the sweeper made it `accepted`)."""
    message_id = accept(database, account_id, send_at=(now() + timedelta(minutes=5)).isoformat())
    with database.unit_of_work() as session:
        session.get(Message, message_id).status = "accepted"
    return message_id


def test_a_scheduled_text_due_at_night_waits_for_eight_in_the_morning_recipient_time(database, gateways, throttle,
                                                                                    simulator):  # noqa: F811
    # given a scheduled single send to a San Francisco number that comes due at 21:30 there
    account_id = make_account(database, 10)
    message_id = released_scheduled_send(database, account_id)

    # when its send job runs then
    status = send(database, message_id, gateways, throttle, now=lambda: LATE_EVENING_IN_SAN_FRANCISCO)

    # then it waits, scheduled for 08:00 the next morning there, with nothing sent or held
    waiting = message(database, message_id)
    assert (status, waiting.status) == ("scheduled", "scheduled")
    assert waiting.send_at.replace(tzinfo=UTC) == NEXT_MORNING_IN_SAN_FRANCISCO
    assert simulator.sent()["messages"] == [] and account(database, account_id).held == 0


def test_an_immediate_reply_at_night_goes_at_once_unless_the_account_holds_all_sends(database, gateways, throttle,
                                                                                   simulator):  # noqa: F811
    # given two immediate single sends at 21:30 recipient time, one from an account whose scope is `all`
    replies = make_account(database, 10)
    strict = make_account(database, 10, sender="+14155550001")
    with database.unit_of_work() as session:
        set_quiet_hours(session, strict, window=None, scope="all")
    reply, held_back = accept(database, replies), accept(database, strict, sender="+14155550001")

    # when their send jobs run
    late = lambda: LATE_EVENING_IN_SAN_FRANCISCO  # noqa: E731

    # then the reply goes now and the other waits for the morning
    assert send(database, reply, gateways, throttle, now=late) == "queued"
    assert send(database, held_back, gateways, throttle, now=late) == "scheduled"
    assert message(database, held_back).send_at.replace(tzinfo=UTC) == NEXT_MORNING_IN_SAN_FRANCISCO


def test_an_account_window_of_its_own_and_an_empty_one(database, gateways, throttle, simulator):  # noqa: F811
    # given accounts whose quiet hours are 09:00-17:00, and none at all (equal start and end)
    office = make_account(database, 10)
    always = make_account(database, 10, sender="+14155550001")
    with database.unit_of_work() as session:
        set_quiet_hours(session, office, window=parse_window({"start": "09:00", "end": "17:00"}), scope=None)
        set_quiet_hours(session, always, window=parse_window({"start": "00:00", "end": "00:00"}), scope=None)
    office_text = released_scheduled_send(database, office)
    always_text = accept(database, always, sender="+14155550001", send_at=(now() + timedelta(minutes=5)).isoformat())
    with database.unit_of_work() as session:
        session.get(Message, always_text).status = "accepted"

    # when both come due at 21:30 recipient time, then the office's waits for 09:00 and the other goes
    late = lambda: LATE_EVENING_IN_SAN_FRANCISCO  # noqa: E731
    assert send(database, office_text, gateways, throttle, now=late) == "scheduled"
    assert message(database, office_text).send_at.replace(tzinfo=UTC) == datetime(2026, 11, 30, 17, 0, tzinfo=UTC)
    assert send(database, always_text, gateways, throttle, now=late) == "queued"


def test_a_worker_killed_after_twilio_accepted_never_resends(database, gateways, throttle, simulator):  # noqa: F811
    account_id = make_account(database, 10)
    message_id = accept(database, account_id)

    class Killed(BaseException):
        pass

    def dies_after_create(*credentials):
        gateway = gateways(*credentials)

        class Dying:
            def send(self, **message):
                gateway.send(**message)
                raise Killed

        return Dying()

    with pytest.raises(Killed):
        send_message(database, message_id, gateway_for=dies_after_create, throttle=throttle, hold_ttl_seconds=1)
    assert send(database, message_id, gateways, throttle) == "skipped"
    assert message(database, message_id).status == "sending"
    assert len(simulator.sent()["messages"]) == 1
    # After the hold's TTL the sweeper finds it in Twilio's list: it gets its sid and is charged once.
    [sent] = simulator.sent()["messages"]
    wait_until_sent(simulator)
    for _ in range(2):
        result = sweeper.sweep(database, enqueue=lambda _: None, gateway_for=gateways, rate_card=CARD,
                               now=now() + timedelta(seconds=5), stale_after=timedelta(seconds=60))
    stored = message(database, message_id)
    assert (stored.twilio_sid, stored.twilio_account_sid, stored.credits_charged) == (sent["sid"], sent["account_sid"],
                                                                                     1000)
    assert stored.status in ("sent", "delivered") and result.reconciled == {}
    assert account(database, account_id).held == 0 and account(database, account_id).balance == 9_000
    assert len(simulator.sent()["messages"]) == 1


def test_an_unknown_outcome_twilio_never_saw_is_sent_again_after_the_ttl_uncharged_by_the_first_try(database, gateways, throttle,
                                                                                simulator):  # noqa: F811
    # given a create whose answer was lost and that never reached Twilio, and the same text sent before it
    account_id = make_account(database, 10)
    earlier = accept(database, account_id)
    send(database, earlier, gateways, throttle)
    message_id = accept(database, account_id)

    def answer_lost(*credentials):
        class Lost:
            def send(self, **message):
                raise OutcomeUnknown("read timed out")

            def find(self, **lookup):
                return gateways(*credentials).find(**lookup)

        return Lost()

    assert send_message(database, message_id, gateway_for=answer_lost, throttle=throttle,
                        hold_ttl_seconds=1) == "sending"
    wait_until_sent(simulator)

    # when the sweeper reconciles it after the hold's TTL
    enqueued = []
    result = sweeper.sweep(database, enqueue=enqueued.append, gateway_for=gateways, rate_card=CARD,
                           now=now() + timedelta(seconds=5), stale_after=timedelta(seconds=60))

    # then the other message's sid is not taken for it: it is accepted again, its send enqueued, and only the
    # earlier one is held
    assert result.reconciled == {message_id: "sent again: Twilio never took it"} and enqueued == [message_id]
    stored = message(database, message_id)
    assert (stored.status, stored.twilio_sid, stored.credits_charged) == ("accepted", None, None)
    assert (account(database, account_id).held, account(database, account_id).balance) == (1000, 10_000)
    assert len(simulator.sent()["messages"]) == 1

    # and its send goes out once, on a fresh hold
    assert send(database, message_id, gateways, throttle) == "queued"
    assert len(simulator.sent()["messages"]) == 2  # the earlier text and this one, each once
    assert (account(database, account_id).held, account(database, account_id).balance) == (2000, 10_000)


def test_a_sweep_that_looked_before_another_sweeps_resend_left_does_not_send_it_a_third_time(
        database, gateways, throttle, simulator, caplog):  # noqa: F811
    # given a text whose create never reached Twilio and whose answer was lost (a warning naming it), its hold past
    # its TTL
    account_id = make_account(database, 10)
    message_id = accept(database, account_id)

    def answer_lost(*credentials):
        class Lost:
            def send(self, **message):
                raise OutcomeUnknown("read timed out")

        return Lost()

    with caplog.at_level("WARNING", logger="shared.messaging.sending"):
        assert send_message(database, message_id, gateway_for=answer_lost, throttle=throttle,
                            hold_ttl_seconds=1) == "sending"
    assert [record.getMessage() for record in caplog.records] == [f"message {message_id}: read timed out"]
    later = now() + timedelta(seconds=5)
    enqueued = []

    # when a slow sweep reads it, and while it asks Twilio's list another sweep resends it and that resend is
    # claimed and on its way to Twilio (claimed, no answer yet) when the slow sweep's list comes back empty
    def racing(*credentials):
        class Racing:
            def find(self, **lookup):
                sweeper.sweep(database, enqueue=enqueued.append, gateway_for=gateways, rate_card=CARD, now=later,
                              stale_after=timedelta(seconds=60))
                assert send_message(database, message_id, gateway_for=answer_lost, throttle=throttle,
                                    hold_ttl_seconds=900) == "sending"
                return gateways(*credentials).find(**lookup)

        return Racing()

    slow = sweeper.sweep(database, enqueue=enqueued.append, gateway_for=racing, rate_card=CARD, now=later,
                         stale_after=timedelta(seconds=60))

    # then only the first sweep resent it: the slow one leaves the resend's claim (its own hold) alone
    assert enqueued == [message_id] and slow.reconciled == {message_id: "skipped"}
    stored = message(database, message_id)
    assert (stored.status, stored.twilio_sid, stored.attempts) == ("sending", None, 2)
    with database.unit_of_work() as session:
        assert session.get(Hold, stored.hold_id).status == "pending"
    assert simulator.sent()["messages"] == []

    # and a sweep that listed the first claim's hold before any of this neither asks Twilio nor resends it
    with database.unit_of_work() as session:
        first_hold = session.scalar(select(Hold.id).where(Hold.reference == message_id).order_by(Hold.id))

    def unreachable(*credentials):
        raise AssertionError("a claim that moved on is not looked up")

    assert sweeper.reconcile(database, message_id, first_hold, gateway_for=unreachable, rate_card=CARD, now=later,
                             enqueue=enqueued.append) == "moved on: claimed again since"
    assert enqueued == [message_id] and message(database, message_id).status == "sending"


def test_a_campaign_text_claimed_after_its_holds_ttl_is_not_taken_for_lost_while_on_its_way_to_twilio(
        database, gateways, throttle, simulator):  # noqa: F811
    # given a text whose hold its campaign chunk reserved long ago: past its TTL, still pending, when it is claimed
    account_id = make_account(database, 10)
    message_id = accept(database, account_id)
    with database.unit_of_work() as session:
        text = session.get(Message, message_id)
        hold = book.reserve(session, account_id, text.credits_estimated, reference=message_id,
                            idempotency_key=f"campaign:c1:message:{message_id}:hold", ttl_seconds=900,
                            now=now() - timedelta(seconds=1000))
        text.hold_id = hold.id
    enqueued, sweeps = [], []

    # when a sweep runs while its create is on its way to Twilio (claimed, no answer yet)
    def in_flight(*credentials):
        class Slow:
            def send(self, **sent):
                sweeps.append(sweeper.sweep(database, enqueue=enqueued.append, gateway_for=gateways, rate_card=CARD,
                                            now=now() + timedelta(seconds=1), stale_after=timedelta(seconds=60)))
                return gateways(*credentials).send(**sent)

        return Slow()

    status = send_message(database, message_id, gateway_for=in_flight, throttle=throttle, hold_ttl_seconds=900)

    # then the sweep leaves it alone, and it is sent once on the campaign's hold, now kept for a TTL from its send
    assert status == "queued" and enqueued == [] and message_id not in sweeps[0].reconciled
    assert len(simulator.sent()["messages"]) == 1
    stored = message(database, message_id)
    with database.unit_of_work() as session:
        renewed = session.get(Hold, stored.hold_id)
    assert stored.hold_id == hold.id and renewed.status == "pending" and utc(renewed.expires_at) > now() + timedelta(
        seconds=800)


def test_transient_errors_release_the_hold_and_ask_for_a_retry(database, gateways, throttle, simulator):  # noqa: F811
    account_id = make_account(database, 10)
    message_id = accept(database, account_id)
    simulator.configure(rate_429=1.0, retry_after_s=3)
    with pytest.raises(SendLater) as later:
        send(database, message_id, gateways, throttle)
    assert later.value.delay_seconds == 3 and not later.value.slot_booked
    assert message(database, message_id).status == "accepted" and account(database, account_id).held == 0
    simulator.configure(rate_429=0.0)
    assert send(database, message_id, gateways, throttle) == "queued"


def test_a_busy_sender_books_a_slot_and_defers_without_booking_twice(database, gateways, simulator):  # noqa: F811
    throttle = SenderThrottle(fakeredis.FakeRedis(), {"long_code": 0.5, "toll_free": 1.0, "short_code": 1.0})
    account_id = make_account(database, 10)
    first, second = accept(database, account_id), accept(database, account_id)
    assert send(database, first, gateways, throttle) == "queued"
    with pytest.raises(SendLater) as later:
        send(database, second, gateways, throttle)
    assert later.value.slot_booked and 1 < later.value.delay_seconds <= 2
    assert send(database, second, gateways, throttle, slot_booked=True) == "queued"


def test_a_spare_job_for_a_message_whose_slot_is_booked_waits_for_it_and_books_no_other(
        database, gateways, simulator):  # noqa: F811
    # given a long code allowed one segment every 2 s: a first text sent, a second booked ~2 s ahead
    throttle = SenderThrottle(fakeredis.FakeRedis(), {"long_code": 0.5, "toll_free": 1.0, "short_code": 1.0})
    account_id = make_account(database, 10)
    first, second, third = (accept(database, account_id) for _ in range(3))
    assert send(database, first, gateways, throttle) == "queued"
    with pytest.raises(SendLater):
        send(database, second, gateways, throttle)
    booked = message(database, second).slot_at

    # when a spare job of the second (redelivered, or enqueued twice) runs before that slot
    with pytest.raises(SendLater) as spare:
        send(database, second, gateways, throttle)

    # then it waits for the same slot, booked once: the next text gets the slot right after it, ~4 s ahead
    assert spare.value.slot_booked and 0 < spare.value.delay_seconds <= 2
    assert message(database, second).slot_at == booked
    with pytest.raises(SendLater) as next_one:
        send(database, third, gateways, throttle)
    assert 3 < next_one.value.delay_seconds <= 4


def test_a_slot_a_moment_ahead_is_recorded_then_slept_off_with_no_row_locked_and_no_second_slot_booked(
        database, gateways, simulator, monkeypatch):  # noqa: F811
    # given a long code allowed 1 segment a second: one text sent, the next one's slot up to 1 s ahead (a second, not
    # less: the first send, through the simulator, must not outlast the wait on a slow machine)
    throttle = SenderThrottle(fakeredis.FakeRedis(), {"long_code": 1.0, "toll_free": 1.0, "short_code": 1.0})
    account_id = make_account(database, 10)
    first, second = accept(database, account_id), accept(database, account_id)
    assert send(database, first, gateways, throttle) == "queued"
    seen_while_sleeping = []
    sleep = time.sleep
    monkeypatch.setattr(sending.time, "sleep", lambda seconds: (
        seen_while_sleeping.append((seconds, message(database, second).status, message(database, second).slot_at)),
        sleep(seconds))[1])

    # when the second is sent
    assert send(database, second, gateways, throttle) == "queued"

    # then its job slept the wait off once, the slot already on record and the message readable (not locked, still
    # accepted), and it was sent in that slot, booked once: the next text's slot is the one right after it
    (seconds, status, slot_at), = seen_while_sleeping
    assert 0 < seconds <= 1 and status == "accepted" and slot_at is not None
    assert message(database, second).slot_at == slot_at
    next_slot = now() + timedelta(seconds=throttle.reserve(SENDER, "long_code", 1))
    assert abs(next_slot - (utc(slot_at) + timedelta(seconds=1))) < timedelta(seconds=0.1)


def test_a_message_sent_at_once_records_the_slot_it_was_booked(database, gateways, throttle, simulator):  # noqa: F811
    account_id = make_account(database, 10)
    message_id = accept(database, account_id)
    before = now()

    assert send(database, message_id, gateways, throttle) == "queued"

    slot = message(database, message_id).slot_at.replace(tzinfo=UTC)
    assert before <= slot <= now()


def test_permanent_errors_fail_without_charge_and_21610_records_the_opt_out(database, gateways, throttle):
    account_id = make_account(database, 10)
    invalid, unsubscribed = accept(database, account_id, to="+15005550001"), accept(database, account_id,
                                                                                     to="+15005550004")
    assert send(database, invalid, gateways, throttle) == "failed"
    assert send(database, unsubscribed, gateways, throttle) == "failed"
    assert (message(database, invalid).error_code, message(database, unsubscribed).error_code) == (21211, 21610)
    with database.unit_of_work() as session:
        assert session.scalar(select(OptOut.source).where(OptOut.phone == "+15005550004")) == "twilio_21610"
    assert account(database, account_id).held == 0 and account(database, account_id).balance == 10_000


def test_rejected_credentials_park_the_account_until_they_are_replaced(database, gateways, throttle,
                                                                      simulator):  # noqa: F811
    account_id = make_account(database, 10)
    with database.unit_of_work() as session:
        set_twilio_credentials(session, account_id, simulator.account_sid, "wrong-token", now=now())
    first, second = accept(database, account_id), accept(database, account_id)
    assert send(database, first, gateways, throttle) == "parked"
    assert "20003" in account(database, account_id).sending_blocked_reason
    assert [message(database, m).status for m in (first, second)] == ["parked", "parked"]
    assert accept(database, account_id) and message(database, first).error_message.startswith("Twilio rejected")
    with database.unit_of_work() as session:
        released = set_twilio_credentials(session, account_id, simulator.account_sid, simulator.auth_token, now=now())
    assert first in released and second in released
    assert send(database, first, gateways, throttle) == "queued"


def test_each_message_records_the_twilio_account_it_was_sent_with(database, gateways, throttle,
                                                                  simulator):  # noqa: F811
    # given one account sending with the deployment's credentials, and one with its own Twilio subaccount
    plain, own = make_account(database, 10), make_account(database, 10, sender="+14155550001")
    subaccount = simulator.add_account()
    with database.unit_of_work() as session:
        set_twilio_credentials(session, own, subaccount["sid"], subaccount["auth_token"], now=now())
    plain_message, own_message = accept(database, plain), accept(database, own, sender="+14155550001")

    # when both are sent
    assert send(database, plain_message, gateways, throttle) == send(database, own_message, gateways, throttle) == "queued"

    # then each stored, with its sid, the account Twilio says owns it: the one whose token signs its callbacks
    assert message(database, plain_message).twilio_account_sid == simulator.account_sid
    assert message(database, own_message).twilio_account_sid == subaccount["sid"]
    owners = {m["sid"]: m["account_sid"] for m in simulator.sent()["messages"]}
    assert owners[message(database, own_message).twilio_sid] == subaccount["sid"]


# --- a final report the tenant could have signed itself, asked of Twilio ---------------------------------------

@pytest.fixture
def own_subaccount(database, simulator):  # noqa: F811
    """An account sending through its own Twilio subaccount: (account id, the subaccount's credentials)."""
    account_id = make_account(database, 10)
    subaccount = simulator.add_account()
    with database.unit_of_work() as session:
        set_twilio_credentials(session, account_id, subaccount["sid"], subaccount["auth_token"], now=now())
    return account_id, Credentials(subaccount["sid"], subaccount["auth_token"])


def test_a_tenants_forged_failure_of_a_delivered_text_is_replaced_by_what_twilio_says(
        database, gateways, throttle, simulator, callback_receiver, own_subaccount):  # noqa: F811
    # given the tenant's message, which Twilio delivered in one segment
    account_id, tenant = own_subaccount
    message_id = accept(database, account_id)
    send(database, message_id, gateways, throttle)
    sid = message(database, message_id).twilio_sid
    callback_receiver.wait_for(sid, lambda callbacks: any(c.form["MessageStatus"] == "delivered" for c in callbacks))

    # when the tenant signs "failed" with its subaccount's token before Twilio's callback lands
    deployment = Credentials(simulator.account_sid, simulator.auth_token)
    assert twilio_reports(database, tenant, sid, "failed", deployment=deployment, error_code=30008) == ToConfirm(sid)
    assert (message(database, message_id).status, message(database, message_id).credits_charged) == ("queued", None)

    # and Twilio is asked, twice (a redelivered job)
    confirm_final_status(database, sid, gateway_for=gateways, rate_card=CARD, now=now())
    confirm_final_status(database, sid, gateway_for=gateways, rate_card=CARD, now=now())

    # then Twilio's answer counts: delivered, one segment charged, once
    confirmed = message(database, message_id)
    assert (confirmed.status, confirmed.twilio_segments, confirmed.error_code) == ("delivered", 1, None)
    assert confirmed.credits_charged == 1000 and usage_entries(database, message_id) == 1
    assert (account(database, account_id).balance, account(database, account_id).held) == (9000, 0)


def test_a_tenants_final_report_of_a_text_twilio_has_not_finished_changes_nothing(
        database, gateways, throttle, simulator, own_subaccount):  # noqa: F811
    # given the tenant's message, still on its way at Twilio
    simulator.configure(callback_delay_ms=600_000)
    account_id, tenant = own_subaccount
    message_id = accept(database, account_id)
    send(database, message_id, gateways, throttle)
    sid = message(database, message_id).twilio_sid

    # when the tenant signs "delivered, 0 segments" and Twilio is asked
    deployment = Credentials(simulator.account_sid, simulator.auth_token)
    assert twilio_reports(database, tenant, sid, "delivered", deployment=deployment, num_segments=0) == ToConfirm(sid)
    with pytest.raises(NotFinalYet, match="queued"):
        confirm_final_status(database, sid, gateway_for=gateways, rate_card=CARD, now=now())

    # then the message is still on its way, its segments as Twilio's create answered them, its hold pending,
    # nothing charged
    waiting = message(database, message_id)
    assert (waiting.status, waiting.twilio_segments, waiting.credits_charged) == ("queued", 1, None)
    assert (account(database, account_id).balance, account(database, account_id).held) == (10_000, 1000)


@pytest.mark.parametrize("asked_by", ["confirmation", "sweeper"])
def test_a_text_whose_record_the_tenant_deleted_at_twilio_is_charged_as_delivered_not_left_free(
        database, gateways, throttle, simulator, own_subaccount, asked_by):  # noqa: F811
    # given the tenant's text, taken by Twilio (its sid stored), whose record Twilio no longer has (the tenant
    # deleted it: the simulator never had this sid), its hold of 1 credit pending
    account_id, tenant = own_subaccount
    message_id = accept(database, account_id)
    send(database, message_id, gateways, throttle)
    gone = "SM" + "0" * 32
    with database.unit_of_work() as session:
        session.get(Message, message_id).twilio_sid = gone

    # when the tenant signs "failed" for it and Twilio is asked, or no callback comes and the sweeper reconciles it
    if asked_by == "confirmation":
        deployment = Credentials(simulator.account_sid, simulator.auth_token)
        assert twilio_reports(database, tenant, gone, "failed", deployment=deployment) == ToConfirm(gone)
        confirm_final_status(database, gone, gateway_for=gateways, rate_card=CARD, now=now())
    else:
        with database.unit_of_work() as session:
            hold_id = session.get(Message, message_id).hold_id
        outcome = sweeper.reconcile(database, message_id, hold_id, gateway_for=gateways, rate_card=CARD,
                                    now=now() + timedelta(seconds=901), enqueue=lambda _: None)
        assert outcome == "settled"

    # then it is delivered and charged its segment, once, as a text Twilio took
    charged = message(database, message_id)
    assert (charged.status, charged.credits_charged) == ("delivered", 1000)
    assert usage_entries(database, message_id) == 1
    assert account(database, account_id).balance == 9000


def test_a_final_report_for_a_sid_no_message_has_yet_is_asked_again_later(database, gateways):
    with pytest.raises(NotFinalYet, match="no message"):
        confirm_final_status(database, "SM" + "f" * 32, gateway_for=gateways, rate_card=CARD, now=now())


# --- settle ----------------------------------------------------------------------------------------

def test_settlement_charges_twilios_segments_once(database, gateways, throttle):
    account_id = make_account(database, 10)
    message_id = accept(database, account_id)
    send(database, message_id, gateways, throttle)
    report(database, message_id, "delivered", segments=3)
    assert settle(database, message_id) == "settled"
    assert settle(database, message_id) == "skipped"  # a replayed job, a duplicate callback
    report(database, message_id, "sent")  # late and out of order
    assert settle(database, message_id) == "skipped"
    assert message(database, message_id).credits_charged == 3000
    assert (account(database, account_id).balance, account(database, account_id).held) == (7000, 0)
    assert usage_entries(database, message_id) == 1


def test_a_message_failed_before_sending_is_not_charged(database, gateways, throttle):
    account_id = make_account(database, 10)
    message_id = accept(database, account_id)
    send(database, message_id, gateways, throttle)
    report(database, message_id, "failed")
    assert settle(database, message_id) == "voided"
    assert settle(database, message_id) == "skipped"
    assert (account(database, account_id).balance, account(database, account_id).held) == (10_000, 0)
    with database.unit_of_work() as session:
        assert session.scalar(select(Hold.status)) == "voided"


def test_a_send_after_credits_expired_writes_their_expiry_then_holds_from_what_is_left(database, gateways, throttle):
    # given an account with 10 lasting credits and 5 that expired an hour ago, their expiry not written yet
    account_id = make_account(database, 10)
    with database.unit_of_work() as session:
        book.grant(session, account_id, 5000, "bonus", granted_at=now() - timedelta(days=2),
                   expires_at=now() - timedelta(hours=1), idempotency_key=f"bonus:{account_id}")
    message_id = accept(database, account_id)

    # when the message is sent
    assert send(database, message_id, gateways, throttle) == "queued"

    # then the expiry was written first, and the hold came from the 10 credits left
    sent, owner = message(database, message_id), account(database, account_id)
    assert (owner.balance, owner.held) == (10_000, 1000)
    assert sent.status == "queued" and sent.attempts == 1 and sent.hold_id is not None
    with database.unit_of_work() as session:
        assert session.scalar(select(func.count()).where(Entry.account_id == account_id, Entry.kind == "expiry")) == 1


def test_in_flight_messages_settle_past_zero_lock_the_account_and_park_the_rest(database, gateways, throttle):
    account_id = make_account(database, 3)
    ids = [accept(database, account_id) for _ in range(6)]
    statuses = [send(database, message_id, gateways, throttle) for message_id in ids]
    assert statuses == ["queued"] * 3 + ["parked"] * 3  # the holds ran out
    for message_id in ids[:3]:
        report(database, message_id, "delivered", segments=2)
        settle(database, message_id)
    locked = account(database, account_id)
    assert (locked.status, locked.balance) == ("locked", -3000)  # every in-flight message charged in full
    assert [message(database, m).credits_charged for m in ids[:3]] == [2000] * 3
    with pytest.raises(AccountLocked):
        accept(database, account_id)
    # A purchase unlocks it; the sweeper releases the parked messages, which then go out.
    with database.unit_of_work() as session:
        book.grant(session, account_id, 10_000, "purchase", granted_at=now(), idempotency_key="top-up")
    enqueued = []
    sweeper.sweep(database, enqueue=enqueued.append, gateway_for=gateways, rate_card=CARD, now=now(),
                  stale_after=timedelta(seconds=60))
    assert sorted(enqueued) == sorted(ids[3:])
    assert [send(database, message_id, gateways, throttle) for message_id in ids[3:]] == ["queued"] * 3


def test_a_message_waiting_for_its_sender_slot_is_left_alone_by_the_sweeper(
        database, gateways, simulator):  # noqa: F811
    # given a long code allowed one segment every 100 s, and a second text that had to book a slot ~100 s ahead
    throttle = SenderThrottle(fakeredis.FakeRedis(), {"long_code": 0.01, "toll_free": 1.0, "short_code": 1.0})
    account_id = make_account(database, 10)
    first, second = accept(database, account_id), accept(database, account_id)
    assert send(database, first, gateways, throttle) == "queued"
    with pytest.raises(SendLater) as later:
        send(database, second, gateways, throttle)
    assert later.value.slot_booked and 99 < later.value.delay_seconds <= 100

    # when the sweeper runs while the slot is still ahead, even long past its staleness limit
    enqueued = []
    sweeper.sweep(database, enqueue=enqueued.append, gateway_for=gateways, rate_card=CARD,
                  now=now() + timedelta(seconds=90), stale_after=timedelta(seconds=60))

    # then it does not send the job again, so no second slot is booked
    assert enqueued == []
    assert message(database, second).status == "accepted"

    # and once the slot has passed long enough for its job to count as lost, the sweeper hands it back
    sweeper.sweep(database, enqueue=enqueued.append, gateway_for=gateways, rate_card=CARD,
                  now=now() + timedelta(seconds=170), stale_after=timedelta(seconds=60))
    assert enqueued == [second]
    booked = message(database, second).slot_at
    assert send(database, second, gateways, throttle, slot_booked=True) == "queued"
    assert message(database, second).slot_at == booked  # what it was booked stays on record


# --- sweeper ---------------------------------------------------------------------------------------

def test_sweeper_enqueues_accepted_messages_whose_job_was_lost(database, gateways):
    account_id = make_account(database, 10)
    message_id = accept(database, account_id)
    enqueued = []
    sweeper.sweep(database, enqueue=enqueued.append, gateway_for=gateways, rate_card=CARD, now=now(),
                  stale_after=timedelta(seconds=60))
    assert enqueued == []
    sweeper.sweep(database, enqueue=enqueued.append, gateway_for=gateways, rate_card=CARD,
                  now=now() + timedelta(seconds=61), stale_after=timedelta(seconds=60))
    assert enqueued == [message_id]


def test_sweeper_reconciles_an_overdue_hold_from_twilio(database, gateways, throttle, callback_receiver):  # noqa: F811
    account_id = make_account(database, 10)
    message_id = accept(database, account_id)
    send(database, message_id, gateways, throttle)
    sid = message(database, message_id).twilio_sid
    callback_receiver.wait_for(sid, lambda callbacks: any(c.form["MessageStatus"] == "delivered" for c in callbacks))
    later = now() + timedelta(seconds=901)
    for _ in range(2):
        result = sweeper.sweep(database, enqueue=lambda _: None, gateway_for=gateways, rate_card=CARD, now=later,
                               stale_after=timedelta(seconds=60))
    assert result.reconciled == {}  # the second pass finds nothing left to do
    stored = message(database, message_id)
    assert (stored.status, stored.credits_charged) == ("delivered", 1000)
    assert stored.twilio_price is not None
    assert (account(database, account_id).balance, account(database, account_id).held) == (9000, 0)


def test_sweeper_reconciles_a_message_with_the_credentials_it_was_sent_with(database, gateways, throttle,
                                                                           callback_receiver, simulator):  # noqa: F811
    # given a message sent with the deployment's credentials, after which its account brings its own subaccount
    account_id = make_account(database, 10)
    message_id = accept(database, account_id)
    send(database, message_id, gateways, throttle)
    sid = message(database, message_id).twilio_sid
    callback_receiver.wait_for(sid, lambda callbacks: any(c.form["MessageStatus"] == "delivered" for c in callbacks))
    subaccount = simulator.add_account()
    with database.unit_of_work() as session:
        set_twilio_credentials(session, account_id, subaccount["sid"], subaccount["auth_token"], now=now())

    # when its hold is overdue and the sweeper asks Twilio about it
    sweeper.sweep(database, enqueue=lambda _: None, gateway_for=gateways, rate_card=CARD,
                  now=now() + timedelta(seconds=901), stale_after=timedelta(seconds=60))

    # then it asked the account that owns the message (the subaccount would not know it) and settled it
    stored = message(database, message_id)
    assert (stored.status, stored.credits_charged) == ("delivered", 1000)
    assert (account(database, account_id).balance, account(database, account_id).held) == (9000, 0)


def charged_at_sent(database, message_id: str, at: datetime, *, created: datetime | None = None) -> None:
    """What a hold outliving its TTL before Twilio's final status leaves: the text 'sent' and charged (its hold
    resolved), at `at`; created at `created` (`at` unless given)."""
    report(database, message_id, "sent")
    assert settle(database, message_id) == "settled"
    with database.unit_of_work() as session:
        stored = session.get(Message, message_id)
        stored.updated_at, stored.created_at = at, created or at
        session.get(Hold, stored.hold_id).resolved_at = at


def sweep_at(database, gateways, at: datetime) -> sweeper.SweepReport:
    return sweeper.sweep(database, enqueue=lambda _: None, gateway_for=gateways, rate_card=CARD, now=at,
                         stale_after=timedelta(seconds=60))


def test_a_text_charged_at_sent_whose_final_status_never_came_is_asked_of_twilio(database, gateways, throttle,
                                                                                callback_receiver):  # noqa: F811
    # given a text Twilio delivered, whose callbacks never reached us, charged at 'sent' when its hold outlived its TTL
    account_id = make_account(database, 10)
    message_id = accept(database, account_id)
    send(database, message_id, gateways, throttle)
    sid = message(database, message_id).twilio_sid
    callback_receiver.wait_for(sid, lambda callbacks: any(c.form["MessageStatus"] == "delivered" for c in callbacks))
    charged = now()
    charged_at_sent(database, message_id, charged)

    # when a sweep comes after it was left alone for `stale_after`, and another after it
    first = sweep_at(database, gateways, charged + timedelta(seconds=61))
    second = sweep_at(database, gateways, charged + timedelta(seconds=62))

    # then Twilio was asked once and its final status recorded; the charge stands, once
    assert (first.asked, second.asked) == ({message_id: "delivered"}, {})
    stored = message(database, message_id)
    assert (stored.status, stored.credits_charged) == ("delivered", 1000)
    assert usage_entries(database, message_id) == 1 and account(database, account_id).balance == 9000


def test_a_text_twilio_has_not_finished_is_asked_again_after_waiting_as_long_again_for_a_day(
        database, gateways, throttle, simulator):  # noqa: F811
    # given a text charged at 'sent' at t, which Twilio keeps on its way
    simulator.configure(callback_delay_ms=600_000)
    account_id = make_account(database, 10)
    message_id = accept(database, account_id)
    send(database, message_id, gateways, throttle)
    t = now()
    charged_at_sent(database, message_id, t)

    # when sweeps come at t + 30 s, 60 s, 100 s, 200 s, 300 s, 401 s, and past a day (`stale_after` is 60 s)
    asked = {seconds: sweep_at(database, gateways, t + timedelta(seconds=seconds)).asked
             for seconds in (30, 60, 100, 200, 300, 401, 86_401)}

    # then it is asked once `stale_after` passed (60), then each time it has waited as long again as it had, and
    # `stale_after` at least (200, 401), and not after a day; Twilio's answer changed nothing
    queued = {message_id: "queued"}
    assert asked == {30: {}, 60: queued, 100: {}, 200: queued, 300: {}, 401: queued, 86_401: {}}
    stored = message(database, message_id)
    assert (stored.status, stored.credits_charged) == ("sent", 1000)


def test_a_scheduled_text_is_asked_about_for_a_day_from_its_charge_not_from_its_creation(database, gateways,
                                                                                          throttle):  # noqa: F811
    # given a text scheduled two days ahead, charged at 'sent' at t
    account_id = make_account(database, 10)
    message_id = accept(database, account_id)
    send(database, message_id, gateways, throttle)
    t = now()
    charged_at_sent(database, message_id, t, created=t - timedelta(days=2))

    # when the sweeper comes once `stale_after` has passed
    asked = sweep_at(database, gateways, t + timedelta(seconds=61)).asked

    # then it asks Twilio about it
    assert list(asked) == [message_id]


def test_texts_not_due_to_be_asked_never_keep_a_due_one_from_its_ask(database, gateways, throttle):  # noqa: F811
    # given 600 texts charged at 'sent' long ago and asked lately, none due again for a while, and a text charged
    # at 'sent' at t + 30 s, left alone after them (its updated_at is the latest)
    account_id = make_account(database, 10)
    due = accept(database, account_id)
    send(database, due, gateways, throttle)
    t = now()
    charged_at_sent(database, due, t + timedelta(seconds=30))
    with database.unit_of_work() as session:
        stored, hold = session.get(Message, due), session.get(Hold, session.get(Message, due).hold_id)
        template = {column.key: getattr(stored, column.key) for column in Message.__mapper__.column_attrs}
        asked_before = Hold(account_id=account_id, amount=hold.amount, status="settled", idempotency_key="earlier",
                            created_at=t - timedelta(seconds=90), expires_at=t - timedelta(seconds=60),
                            resolved_at=t - timedelta(seconds=60), settled_amount=hold.amount)
        session.add(asked_before)
        session.flush()
        session.add_all(Message(**{**template, "id": f"msg_asked_{n}", "twilio_sid": f"SM{n:032d}",
                                   "hold_id": asked_before.id, "updated_at": t + timedelta(seconds=25)})
                        for n in range(600))

    # when the sweeper comes at t + 100 s (the others are due at t + 110 s)
    asked = sweep_at(database, gateways, t + timedelta(seconds=100)).asked

    # then the due text is asked about, and none of the others
    assert list(asked) == [due]


def test_a_sweep_asks_twilio_for_a_few_seconds_at_most_and_leaves_the_rest_to_the_next(database, gateways, throttle,
                                                                                        monkeypatch):  # noqa: F811
    # given two texts charged at 'sent' at t, due to be asked, and a sweep's time for asking used up by one ask
    account_id = make_account(database, 10)
    texts = [accept(database, account_id) for _ in range(2)]
    t = now()
    for message_id in texts:
        send(database, message_id, gateways, throttle)
        charged_at_sent(database, message_id, t)
    monkeypatch.setattr(sweeper, "ASKING_SECONDS", 0.0)

    # when two sweeps come once `stale_after` has passed
    first = sweep_at(database, gateways, t + timedelta(seconds=61))
    second = sweep_at(database, gateways, t + timedelta(seconds=62))

    # then each asked about one text, the second about the one the first left
    assert len(first.asked) == len(second.asked) == 1
    assert sorted([*first.asked, *second.asked]) == sorted(texts)


def test_an_account_with_many_texts_to_ask_about_fills_no_sweep_with_them(database, gateways, throttle,
                                                                           monkeypatch):  # noqa: F811
    # given an account's sweep's worth of texts charged at 'sent', due to be asked, and another account's text charged
    # after them
    monkeypatch.setattr(sweeper, "ASKS_PER_SWEEP", 2)
    many, other = make_account(database, 10), make_account(database, 10, sender="+14155550011")
    texts = [accept(database, many) for _ in range(2)] + [accept(database, other, sender="+14155550011")]
    t = now()
    for n, message_id in enumerate(texts):
        send(database, message_id, gateways, throttle)
        charged_at_sent(database, message_id, t + n * timedelta(seconds=1))

    # when a sweep comes once `stale_after` has passed for all three
    asked = sweep_at(database, gateways, t + timedelta(seconds=63)).asked

    # then it took each account's oldest text in turn: the first account's first, then the other account's
    assert list(asked) == [texts[0], texts[2]]


def sent_with_overdue_holds(database, gateways, throttle, receiver, account_id: str, count: int, *,
                            sender: str = SENDER) -> list[str]:
    """`count` texts of the account, from `sender`, that Twilio delivered, whose callbacks never reached us: their
    holds outlive their TTL 900 s after now()."""
    texts = [accept(database, account_id, sender=sender) for _ in range(count)]
    for message_id in texts:
        send(database, message_id, gateways, throttle)
        receiver.wait_for(message(database, message_id).twilio_sid,
                          lambda callbacks: any(c.form["MessageStatus"] == "delivered" for c in callbacks))
    return texts


def fetching_through(gateways, before_fetch):
    """A gateway_for whose fetch calls `before_fetch(sid)` (which may raise), then fetches from the simulator."""
    def gateway_for(*credentials):
        class Fetching:
            def fetch(self, sid):
                before_fetch(sid)
                return gateways(*credentials).fetch(sid)

        return Fetching()

    return gateway_for


def test_a_sweep_asks_twilio_nothing_more_once_twilio_asked_it_to_try_again_later(
        database, gateways, throttle, callback_receiver, simulator):  # noqa: F811
    # given two texts whose holds outlived their TTL and one charged at 'sent' due to be asked, then Twilio failing
    # every request with a 500
    account_id = make_account(database, 10)
    overdue = sent_with_overdue_holds(database, gateways, throttle, callback_receiver, account_id, 2)
    charged = sent_with_overdue_holds(database, gateways, throttle, callback_receiver, account_id, 1)[0]
    charged_at_sent(database, charged, now())
    simulator.configure(rate_5xx=1.0)
    fetched = []

    # when a sweep comes
    later = now() + timedelta(seconds=901)
    struggling = sweeper.sweep(database, enqueue=lambda _: None, gateway_for=fetching_through(gateways, fetched.append),
                               rate_card=CARD, now=later, stale_after=timedelta(seconds=60))

    # then it asked Twilio once: the first overdue text waits, and nothing else was asked
    assert (struggling.reconciled, struggling.asked, len(fetched)) == ({overdue[0]: sweeper.RETRY_LATER}, {}, 1)

    # and once Twilio answers again, the next sweep reconciles both and asks about the charged one
    simulator.configure(rate_5xx=0.0)
    recovered = sweep_at(database, gateways, later)
    assert (sorted(recovered.reconciled), list(recovered.asked)) == (sorted(overdue), [charged])


# --- early callbacks, lost settlements, scheduled releases ---------------------------------------

def early_statuses(database) -> int:
    with database.unit_of_work() as session:
        return session.scalar(select(func.count()).select_from(EarlyStatus))


def test_a_callback_that_beats_the_stored_sid_is_applied_when_the_sid_is_stored(database, gateways, throttle,
                                                                                simulator):  # noqa: F811
    # given Twilio reports the message delivered before the worker stored its sid
    simulator_credentials = Credentials(simulator.account_sid, simulator.auth_token)
    account_id = make_account(database, 10)
    message_id = accept(database, account_id)
    changes = []

    def reports_before_the_answer(*credentials):
        class Racing:
            def send(self, **fields):
                sent = gateways(*credentials).send(**fields)
                for status in ("sent", "delivered", "delivered"):  # with a duplicate
                    changes.append(twilio_reports(database, simulator_credentials, sent.sid, status, num_segments=2))
                return sent

        return Racing()

    # when the worker stores the sid
    status = send_message(database, message_id, gateway_for=reports_before_the_answer, throttle=throttle,
                          hold_ttl_seconds=900)

    # then the reports were kept, and applied in that unit of work: the message is final for its caller to settle
    assert changes == [None, None, None]
    assert status == "delivered" and early_statuses(database) == 0
    assert (message(database, message_id).status, message(database, message_id).twilio_segments) == ("delivered", 2)
    # and a late repeat of the callback does not make it final a second time
    with database.unit_of_work() as session:
        repeat = record_status(session, sid=message(database, message_id).twilio_sid, status="delivered", now=now())
    assert not repeat.became_final
    assert settle(database, message_id) == "settled" and message(database, message_id).credits_charged == 2000


def test_reports_for_a_sid_nobody_stores_are_forgotten_after_a_day(database, gateways, simulator):  # noqa: F811
    credentials = Credentials(simulator.account_sid, simulator.auth_token)
    assert twilio_reports(database, credentials, "SM" + "e" * 32, "delivered") is None
    assert early_statuses(database) == 1
    sweeper.sweep(database, enqueue=lambda _: None, gateway_for=gateways, rate_card=CARD, now=now(),
                  stale_after=timedelta(seconds=60))
    assert early_statuses(database) == 1
    sweeper.sweep(database, enqueue=lambda _: None, gateway_for=gateways, rate_card=CARD,
                  now=now() + timedelta(days=1, seconds=1), stale_after=timedelta(seconds=60))
    assert early_statuses(database) == 0


def test_sweeper_hands_back_final_messages_whose_settlement_was_lost(database, gateways, throttle):
    # given a delivered message whose settle job never ran (the webhook's enqueue failed)
    account_id = make_account(database, 10)
    message_id = accept(database, account_id)
    send(database, message_id, gateways, throttle)
    report(database, message_id, "delivered")

    def sweep_at(when: datetime) -> list[str]:
        return sweeper.sweep(database, enqueue=lambda _: None, gateway_for=gateways, rate_card=CARD, now=when,
                             stale_after=timedelta(seconds=60)).to_settle

    # then the sweeper leaves it to its job for a while, then hands it back to settle, once settled never again
    assert sweep_at(now()) == []
    assert sweep_at(now() + timedelta(seconds=61)) == [message_id]
    settle(database, message_id)
    assert sweep_at(now() + timedelta(seconds=61)) == []


def test_a_scheduled_message_is_released_by_its_own_job_when_due(database):
    account_id = make_account(database, 10)
    send_at = now() + timedelta(seconds=30)
    message_id = accept(database, account_id, send_at=send_at.isoformat())
    with database.unit_of_work() as session:
        early = sweeper.release_scheduled(session, message_id, now=send_at - timedelta(seconds=2))
    assert 1000 <= early <= 2000 and message(database, message_id).status == "scheduled"
    with database.unit_of_work() as session:
        assert sweeper.release_scheduled(session, message_id, now=send_at) == 0
    assert message(database, message_id).status == "accepted"
    with database.unit_of_work() as session:
        assert sweeper.release_scheduled(session, message_id, now=send_at) is None  # a replayed job


@pytest.mark.parametrize(("send_at", "outcome"), [
    (timedelta(hours=-23), "accepted"),  # a retry, a clock behind: now
    (timedelta(days=-2), "is more than a day past: leave it out to send now"),  # a wrong month: refused
    (timedelta(days=-365 * 127), "is more than a day past: leave it out to send now"),  # 1900: refused
    (timedelta(days=367), "is more than a year ahead"),
])
def test_a_send_time_far_past_is_refused_rather_than_sent_at_once(database, send_at, outcome):
    # given an account; when a message is sent with a send_at that far from now
    account_id = make_account(database, 10)
    try:
        message_id = accept(database, account_id, send_at=(now() + send_at).isoformat())
    except ValidationFailed as refused:
        # then a time long past (or too far ahead) is refused naming send_at, and nothing is stored
        assert refused.errors == {"send_at": outcome}
        with database.unit_of_work() as session:
            assert session.query(Message).count() == 0
        return
    # then one just past goes now
    assert message(database, message_id).status == outcome and message(database, message_id).send_at is None


def test_send_delay_is_bounded_by_the_brokers_maximum():
    at = now()
    assert send_delay_ms(None, at) == 0
    assert send_delay_ms(at + timedelta(seconds=90), at) == 90_000
    assert send_delay_ms(at - timedelta(seconds=1), at) == 0
    assert send_delay_ms(at + timedelta(days=8), at) is None  # the sweeper releases it


def test_credits_added_asks_for_the_release_only_when_there_is_something_to_release(database, gateways,
                                                                                    throttle, monkeypatch):
    asked = []
    monkeypatch.setattr(parking, "_release_listeners", [asked.append])
    account_id = make_account(database, 1)
    message_id = accept(database, account_id)
    with database.unit_of_work() as session:
        session.get(Account, account_id).status = "locked"
        parking.park_account(session, account_id, "locked", now=now())
    parking.credits_added(database, account_id)
    assert asked == []  # still locked
    with database.unit_of_work() as session:
        session.get(Account, account_id).status = "active"
    parking.credits_added(database, account_id)
    assert asked == [account_id]
    with database.unit_of_work() as session:
        assert parking.release_parked(session, account_id, now=now()) == [message_id]


class TwilioLosingAnswers:
    """Twilio whose answer to a create never arrives and that lists nothing it took: a resend is due."""

    def send(self, **_):
        raise OutcomeUnknown("read timed out")

    def find(self, **_):
        return []


def test_texts_waiting_unsent_with_overdue_holds_do_not_keep_the_sweeper_from_a_lost_send(database, throttle,
                                                                                        monkeypatch):
    # given a sweep batch's worth of texts held by their campaign chunk and waiting unsent (the campaign paused),
    # their holds overdue, and behind them a text whose create got no answer: `sending`, no sid
    monkeypatch.setattr(sweeper, "BATCH", 3)
    account_id, start = make_account(database, 10), now()
    for n in range(3):
        waiting = accept(database, account_id, to=f"+1415555{n:04d}")
        with database.unit_of_work() as session:
            hold = book.reserve(session, account_id, 1000, reference=waiting, idempotency_key=f"chunk:{n}",
                                ttl_seconds=1, now=start)
            stored = session.get(Message, waiting)
            stored.hold_id, stored.status = hold.id, "scheduled"
    lost = accept(database, account_id, to="+14155559999")
    assert send_message(database, lost, gateway_for=lambda *_: TwilioLosingAnswers(), throttle=throttle,
                        hold_ttl_seconds=2, now=lambda: start) == "sending"

    # when the sweeper runs, hour after hour, while the campaign stays paused
    enqueued = []
    for hours in (1, 2):
        sweeper.sweep(database, enqueue=enqueued.append, gateway_for=lambda *_: TwilioLosingAnswers(),
                      rate_card=CARD, now=start + timedelta(hours=hours), stale_after=timedelta(seconds=60))

    # then it reached the lost send: Twilio never took it, so it is `accepted` again and its send job enqueued
    assert message(database, lost).status == "accepted" and lost in enqueued


class TwilioRefusingLookupsFor(TwilioLosingAnswers):
    """TwilioLosingAnswers that refuses every lookup of a message to `prefix`'s numbers (that account's credentials
    were revoked, say), counting the refusals."""

    def __init__(self, prefix: str):
        self.prefix, self.refused = prefix, 0

    def find(self, *, to, **_):
        if to.startswith(self.prefix):
            self.refused += 1
            raise CredentialsRejected("AC" + "0" * 32, "Authenticate")
        return []


def lost_sends_of_revoked_accounts(database, throttle, twilio) -> tuple[list[str], datetime]:
    """Two accounts' three lost sends each, their holds overdue one after the other, the accounts' own Twilio
    credentials then revoked (`twilio` refuses their lookups); behind them another account's lost send (the last)."""
    start = now()
    revoked = [make_account(database, 10), make_account(database, 10, sender="+14155550012")]
    other_account = make_account(database, 10, sender="+14155550011")
    lost = []
    for account_id, to, sender in [*((revoked[0], f"+1415555{n:04d}", SENDER) for n in range(3)),
                                   *((revoked[1], f"+1415555{n + 100:04d}", "+14155550012") for n in range(3)),
                                   (other_account, "+12125550100", "+14155550011")]:
        lost.append(accept(database, account_id, to=to, sender=sender))
        assert send_message(database, lost[-1], gateway_for=lambda *_: twilio, throttle=throttle,
                            hold_ttl_seconds=2, now=lambda: start) == "sending"
        start += timedelta(seconds=1)  # each hold is overdue a little later than the one before
    with database.unit_of_work() as session:
        for n, account_id in enumerate(revoked):
            set_twilio_credentials(session, account_id, f"AC{n:032d}", "f" * 32, now=now())
    return lost, start


def test_accounts_whose_lookups_are_refused_take_a_place_each_in_a_sweep_not_the_whole_of_it(database, throttle,
                                                                                            monkeypatch):
    # given two accounts with a sweep batch's worth of lost sends each that Twilio refuses to look up, and behind
    # them another account's lost send
    monkeypatch.setattr(sweeper, "BATCH", 3)
    twilio = TwilioRefusingLookupsFor("+1415555")
    lost, start = lost_sends_of_revoked_accounts(database, throttle, twilio)

    # when the sweeper runs once
    enqueued = []
    report = sweeper.sweep(database, enqueue=enqueued.append, gateway_for=lambda *_: twilio, rate_card=CARD,
                           now=start + timedelta(hours=1), stale_after=timedelta(seconds=60))

    # then it took each account's oldest lost send in turn: one of each refusing account's, then the other
    # account's, which Twilio never took, so it is `accepted` again and its send job enqueued
    assert [message_id for message_id, outcome in report.reconciled.items()
            if outcome.startswith(sweeper.CREDENTIALS_REFUSED)] == [lost[0], lost[3]]
    assert message(database, lost[6]).status == "accepted" and lost[6] in enqueued


def test_a_sweep_asks_no_more_with_credentials_twilio_refused(database, throttle):
    # given two accounts whose revoked credentials Twilio refuses, with three lost sends each, and another account's
    twilio = TwilioRefusingLookupsFor("+1415555")
    lost, start = lost_sends_of_revoked_accounts(database, throttle, twilio)

    # when the sweeper runs once
    enqueued = []
    sweeper.sweep(database, enqueue=enqueued.append, gateway_for=lambda *_: twilio, rate_card=CARD,
                  now=start + timedelta(hours=1), stale_after=timedelta(seconds=60))

    # then Twilio was asked once with each account's refused credentials, and the other account's send was judged
    assert twilio.refused == 2
    assert message(database, lost[6]).status == "accepted" and lost[6] in enqueued


def test_a_tenants_own_twilio_refusing_its_asks_for_a_while_stops_no_other_accounts_reconciliation(
        database, gateways, throttle, callback_receiver, simulator):  # noqa: F811
    # given an account's two texts whose holds outlived their TTL, then another account's; the first account then
    # brings Twilio credentials of its own, and Twilio answers 429 to every ask about its texts (its own Twilio
    # account rate-limited, say)
    other_sender = "+14155550001"
    first, other = make_account(database, 10), make_account(database, 10, sender=other_sender)
    refused = sent_with_overdue_holds(database, gateways, throttle, callback_receiver, first, 2)
    own = simulator.add_account()
    with database.unit_of_work() as session:
        set_twilio_credentials(session, first, own["sid"], own["auth_token"], now=now())
    behind = sent_with_overdue_holds(database, gateways, throttle, callback_receiver, other, 1, sender=other_sender)
    refused_sids = {message(database, message_id).twilio_sid for message_id in refused}

    def rate_limited(sid):
        if sid in refused_sids:
            raise TransientTwilioError("Twilio answered 429", status=429, code=20429)

    # when a sweep comes
    report = sweeper.sweep(database, enqueue=lambda _: None, gateway_for=fetching_through(gateways, rate_limited),
                           rate_card=CARD, now=now() + timedelta(seconds=901), stale_after=timedelta(seconds=60))

    # then the first account's first text was asked and waits with the other, and the other account's was settled
    assert report.reconciled == {refused[0]: sweeper.RETRY_LATER, behind[0]: "settled"}
    assert message(database, behind[0]).credits_charged == 1000
