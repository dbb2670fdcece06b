"""Toll-free reprocessing through the real actors (dramatiq Worker on fakeredis, the in-process Twilio simulator),
on SQLite and PostgreSQL: a filtered text is resent once, whatever Twilio and the broker deliver twice."""

import time
from datetime import UTC, datetime, timedelta

import dramatiq
import fakeredis
import pytest
from sqlalchemy import func, select

from shared.messaging import sweeper
from shared.messaging.opt_outs import FROM_STOP_KEYWORD, opt_out
from shared.messaging.sender_throttle import SenderThrottle
from shared.models import Account, Entry, Message, PhoneNumber
from shared.twilio.signatures import Credentials
from tests.integration.messaging.test_send_pipeline import (  # noqa: F401
    CARD,
    FAST,
    RECIPIENT,
    SENDER,
    accept,
    charged_at_sent,
    gateways,
    make_account,
    message,
    usage_entries,
)
from tests.support.callbacks import twilio_reports
from tests.twilio_sim_fixtures import (  # noqa: F401
    _callback_receiver_server,
    _simulator_server,
    background_loop,
    callback_receiver,
    simulator,
)

TOLL_FREE = "+18005550100"
FILTERED = {"undelivered:30007": 1}


@pytest.fixture
def actors(database, gateways, fake_broker):  # noqa: F811
    """The workers' actors on `database`, run by a Worker with several threads (duplicates may race)."""
    import workers
    from workers import resources

    resources.use(resources.Resources(
        database=database, gateway_for=gateways, throttle=SenderThrottle(fakeredis.FakeRedis(), FAST),
        hold_ttl_seconds=900, stale_after=timedelta(seconds=60)))
    worker = dramatiq.Worker(fake_broker, worker_threads=4, worker_timeout=100)
    worker.start()
    yield workers
    worker.stop()
    resources.use(None)


def reprocessing_account(database, credits: int, *, enabled: bool = True) -> str:
    account_id = make_account(database, credits)
    with database.unit_of_work() as session:
        session.add(PhoneNumber(account_id=account_id, phone=TOLL_FREE, type="toll_free"))
        session.get(Account, account_id).toll_free_reprocessing = enabled
    return account_id


def twilio_finished(simulator, sid: str, timeout: float = 5.0) -> dict:  # noqa: F811
    """The simulator's record of `sid` once its life there is over."""
    deadline = time.monotonic() + timeout
    while True:
        found = next(m for m in simulator.sent()["messages"] if m["sid"] == sid)
        if found["status"] in ("delivered", "undelivered", "failed"):
            return found
        assert time.monotonic() < deadline, f"{sid} never finished in the simulator"
        time.sleep(0.02)


def callbacks_twice(database, simulator, actors, message_id: str) -> None:  # noqa: F811
    """Twilio's callbacks for the message, each delivered twice and the final one first; each report that made it
    final enqueues its settlement, as the webhook does, and every settle job is delivered twice."""
    sent = message(database, message_id)
    assert sent.twilio_sid is not None, f"the send queue is done, the message is {sent.status} without a sid"
    twilio = twilio_finished(simulator, sent.twilio_sid)
    credentials = Credentials(simulator.account_sid, simulator.auth_token)
    for status in (twilio["status"], twilio["status"], "sent", "sent"):
        change = twilio_reports(database, credentials, sent.twilio_sid, status, num_segments=twilio["num_segments"],
                                error_code=twilio["error_code"] if status == twilio["status"] else None)
        if change is not None and change.became_final:
            for _ in range(2):
                actors.settling.settle_message.send(message_id)


def resends_of(database, message_id: str) -> list[Message]:
    with database.unit_of_work() as session:
        return list(session.scalars(select(Message).where(Message.reprocessed_from == message_id)))


def run(fake_broker, *queues: str) -> None:
    for queue in queues:
        fake_broker.join(queue)


def filtered_without_callbacks(database, actors, fake_broker, simulator) -> str:  # noqa: F811
    """A text of an account with toll-free reprocessing on, sent and filtered by the carrier (30007), none of whose
    callbacks reached us: its id."""
    simulator.configure(sender_outcomes={SENDER: FILTERED})
    original = accept(database, reprocessing_account(database, 10))
    actors.sending.send_message.send(original)
    run(fake_broker, "send")
    twilio_finished(simulator, message(database, original).twilio_sid)
    return original


def test_duplicated_and_reordered_callbacks_resend_a_filtered_text_once(database, actors, fake_broker,
                                                                      simulator):  # noqa: F811
    # given an account with reprocessing on, 10 credits, and carriers that filter its local number's texts
    simulator.configure(sender_outcomes={SENDER: FILTERED})
    account_id = reprocessing_account(database, 10)
    original = accept(database, account_id, body="Open house Sunday at 2pm")

    # when the text is sent (the send job twice) and Twilio reports it undelivered with 30007, every callback
    # twice and out of order, every settle job twice
    for _ in range(2):
        actors.sending.send_message.send(original)
    run(fake_broker, "send")
    callbacks_twice(database, simulator, actors, original)
    run(fake_broker, "settle", "send")

    # then Twilio got the text twice: once from the local number, once (the resend) from the toll-free one
    [resend] = resends_of(database, original)
    sent = simulator.sent()["messages"]
    assert sorted((m["from"], m["body"]) for m in sent) == [
        (SENDER, "Open house Sunday at 2pm"), (TOLL_FREE, "Open house Sunday at 2pm")]

    # and when the resend's own callbacks arrive twice, it settles once
    callbacks_twice(database, simulator, actors, resend.id)
    run(fake_broker, "settle", "send")
    assert len(resends_of(database, original)) == 1 and len(simulator.sent()["messages"]) == 2

    # then the original paid its segment at the local rate, the resend exactly 1 credit, each once
    stored_original, stored_resend = message(database, original), message(database, resend.id)
    assert (stored_original.status, stored_original.error_code, stored_original.credits_charged) == (
        "undelivered", 30007, 1000)
    assert (stored_resend.status, stored_resend.from_, stored_resend.credits_charged) == ("delivered", TOLL_FREE, 1000)
    with database.unit_of_work() as session:
        account = session.get(Account, account_id)
        assert (account.balance, account.held) == (8000, 0)
        usage = session.scalars(select(Entry.reference).where(Entry.kind == "usage")).all()
        assert sorted(usage) == sorted([original, resend.id])


def test_a_resend_the_account_cannot_pay_parks_and_leaves_the_original_as_it_is(database, actors, fake_broker,
                                                                               simulator):  # noqa: F811
    # given an account whose one credit pays only the original
    simulator.configure(sender_outcomes={SENDER: FILTERED})
    account_id = reprocessing_account(database, 1)
    original = accept(database, account_id)

    # when the original is filtered and settled
    actors.sending.send_message.send(original)
    run(fake_broker, "send")
    callbacks_twice(database, simulator, actors, original)
    run(fake_broker, "settle", "send")

    # then the resend waits parked, as any send the account cannot pay, and never reached Twilio
    [resend] = resends_of(database, original)
    assert (resend.status, resend.credits_charged) == ("parked", None)
    assert "1000 mc required" in resend.error_message
    assert len(simulator.sent()["messages"]) == 1
    # and the original is charged as any undelivered text, and otherwise untouched
    stored = message(database, original)
    assert (stored.status, stored.error_code, stored.credits_charged) == ("undelivered", 30007, 1000)
    with database.unit_of_work() as session:
        assert (session.get(Account, account_id).balance, session.get(Account, account_id).held) == (0, 0)


def test_with_the_setting_off_a_filtered_text_is_not_resent(database, actors, fake_broker, simulator):  # noqa: F811
    simulator.configure(sender_outcomes={SENDER: FILTERED})
    account_id = reprocessing_account(database, 10, enabled=False)
    original = accept(database, account_id)

    actors.sending.send_message.send(original)
    run(fake_broker, "send")
    callbacks_twice(database, simulator, actors, original)
    run(fake_broker, "settle", "send")

    assert resends_of(database, original) == []
    assert len(simulator.sent()["messages"]) == 1
    with database.unit_of_work() as session:
        assert session.scalar(select(func.count()).select_from(Message)) == 1


def test_a_filtered_text_whose_callbacks_were_lost_is_resent_by_the_reconciliation(database, actors, fake_broker,
                                                                                  gateways, simulator):  # noqa: F811
    # given a filtered text whose callbacks never reached us
    original = filtered_without_callbacks(database, actors, fake_broker, simulator)

    # when the sweeper finds its hold past its TTL, asks Twilio, and settles it
    to_send: list[str] = []
    sweeper.sweep(database, enqueue=to_send.append, gateway_for=gateways, rate_card=CARD,
                  now=datetime.now(UTC) + timedelta(hours=1), stale_after=timedelta(hours=2))

    # then the original is settled as undelivered and its toll-free resend is handed out to be sent
    [resend] = resends_of(database, original)
    assert to_send == [resend.id] and resend.from_ == TOLL_FREE
    stored = message(database, original)
    assert (stored.status, stored.error_code, stored.credits_charged) == ("undelivered", 30007, 1000)


def test_a_recipient_who_opted_out_meanwhile_gets_no_resend(database, actors, fake_broker, simulator):  # noqa: F811
    # given a filtered text whose recipient texted STOP before it was settled
    simulator.configure(sender_outcomes={SENDER: FILTERED})
    account_id = reprocessing_account(database, 10)
    original = accept(database, account_id)
    actors.sending.send_message.send(original)
    run(fake_broker, "send")
    with database.unit_of_work() as session:
        opt_out(session, account_id, RECIPIENT, FROM_STOP_KEYWORD)

    # when it is settled and its resend's send job runs
    callbacks_twice(database, simulator, actors, original)
    run(fake_broker, "settle", "send")

    # then the resend is canceled at its send step, as any text to an opted-out recipient: never sent, not charged
    [resend] = resends_of(database, original)
    assert (resend.status, resend.credits_charged) == ("canceled", None)
    assert len(simulator.sent()["messages"]) == 1
    with database.unit_of_work() as session:
        assert (session.get(Account, account_id).balance, session.get(Account, account_id).held) == (9000, 0)


def test_a_filtered_text_charged_at_sent_is_resent_when_the_sweeper_asks_twilio_of_it(database, actors, fake_broker,
                                                                                     gateways, simulator):  # noqa: F811
    # given a filtered text whose final callback never reached us, charged at 'sent' when its hold outlived its TTL
    original = filtered_without_callbacks(database, actors, fake_broker, simulator)
    charged = datetime.now(UTC)
    charged_at_sent(database, original, charged)

    # when the sweeper asks Twilio of it, twice
    to_send: list[str] = []
    for seconds in (61, 62):
        sweeper.sweep(database, enqueue=to_send.append, gateway_for=gateways, rate_card=CARD,
                      now=charged + timedelta(seconds=seconds), stale_after=timedelta(seconds=60))

    # then the original is undelivered, charged once, and its toll-free resend is handed out to be sent, once
    [resend] = resends_of(database, original)
    assert to_send == [resend.id] and resend.from_ == TOLL_FREE
    stored = message(database, original)
    assert (stored.status, stored.error_code, stored.credits_charged) == ("undelivered", 30007, 1000)
    assert usage_entries(database, original) == 1
