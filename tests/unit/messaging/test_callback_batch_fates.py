"""A batch of status callbacks, on SQLite (one statement a report) and on PostgreSQL (the first report of each message
in one statement, any later ones after it): each report meets the fate it would meet alone, in the order it came."""

from datetime import UTC, datetime

import pytest

from shared.errors import CallbackRejected
from shared.events.endpoints import create_endpoint
from shared.messaging.statuses import Callback, StatusChange, record_callbacks
from shared.models import Account, EarlyStatus, Message, WebhookEvent
from shared.twilio.signatures import Credentials, SignedForm
from twilio_sim.signature import twilio_signature

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
DEPLOYMENT = Credentials("AC" + "0" * 32, "deployment-token")
URL = "https://creditq.example/webhooks/twilio/status"
S1, S2, S3, UNKNOWN = ("SM" + digit * 32 for digit in "1239")


def callback(sid: str, status: str, *, token: str = DEPLOYMENT.auth_token, **report) -> Callback:
    params = {"MessageSid": sid, "MessageStatus": status, "AccountSid": DEPLOYMENT.account_sid}
    return Callback(SignedForm(URL, params, twilio_signature(token, URL, params)), sid=sid, status=status, **report)


@pytest.fixture
def messages(database):
    """msg_1 and msg_3 with Twilio (ours sent, Twilio's last word queued); msg_2 delivered already."""
    with database.unit_of_work() as session:
        session.add(Account(id="acct_1", name="Realty"))
        session.flush()
        for message_id, sid, status, twilio_status in (("msg_1", S1, "sent", "queued"),
                                                       ("msg_2", S2, "delivered", "delivered"),
                                                       ("msg_3", S3, "sent", "queued")):
            session.add(Message(id=message_id, account_id="acct_1", to="+14155550100", from_="+14155550199",
                                body="hi", status=status, twilio_sid=sid, twilio_status=twilio_status,
                                created_at=T0, updated_at=T0))
    return database


def stored(database, message_id: str) -> tuple:
    with database.unit_of_work() as session:
        message = session.get(Message, message_id)
        return (message.status, message.twilio_status, message.twilio_segments, message.twilio_price,
                message.twilio_price_unit, message.updated_at.astimezone(UTC))


def test_each_report_of_a_batch_meets_its_own_fate_in_the_order_it_came(messages):
    # given one batch bringing, in this order: msg_1 sent with 2 segments, msg_1 delivered with its price, a sid not
    # stored yet, a regression of the delivered msg_2, msg_3 delivered twice and then sent late, a forgery about
    # msg_1, and a status Twilio never documented for msg_3
    batch = [callback(S1, "sent", num_segments=2), callback(S1, "delivered", price="-0.00790", price_unit="USD"),
             callback(UNKNOWN, "delivered"), callback(S2, "sent"), callback(S3, "delivered"),
             callback(S3, "delivered"), callback(S3, "sent"), callback(S1, "undelivered", token="guessed"),
             callback(S3, "bogus")]
    now = datetime(2026, 3, 1, 12, 5, tzinfo=UTC)

    # (to an account whose endpoint takes every event)
    with messages.unit_of_work() as session:
        create_endpoint(session, "acct_1", url="https://hooks.example.com/creditq", events=["*"], description=None,
                        now=T0)

    # when it is applied in one unit of work
    with messages.unit_of_work() as session:
        outcomes = record_callbacks(session, batch, deployment=DEPLOYMENT, now=now)

    # then msg_1 went sent, then delivered (its segments from the first report, its price from the second); the
    # unknown sid is kept; the regression, the duplicate, the late report and the unknown status change nothing;
    # the forgery is refused
    sent, delivered, unknown, regression, first, duplicate, late, forged, bogus = outcomes
    assert sent == StatusChange("msg_1", "acct_1", became_final=False, changed=True)
    assert delivered == StatusChange("msg_1", "acct_1", became_final=True, changed=True)
    assert unknown is None
    assert regression == StatusChange("msg_2", "acct_1", became_final=False, changed=False)
    assert first == StatusChange("msg_3", "acct_1", became_final=True, changed=True)
    assert duplicate == late == bogus == StatusChange("msg_3", "acct_1", became_final=False, changed=False)
    assert isinstance(forged, CallbackRejected)
    assert stored(messages, "msg_1") == ("delivered", "delivered", 2, "-0.00790", "USD", now)
    assert stored(messages, "msg_2") == ("delivered", "delivered", None, None, None, T0)
    assert stored(messages, "msg_3") == ("delivered", "delivered", None, None, None, now)
    with messages.unit_of_work() as session:
        assert [(row.sid, row.status) for row in session.query(EarlyStatus)] == [(UNKNOWN, "delivered")]
        # and each message made final has its one final event
        assert sorted((event.type, event.data["id"]) for event in session.query(WebhookEvent)) == [
            ("message.delivered", "msg_1"), ("message.delivered", "msg_3")]


def test_a_report_a_batch_finds_already_passed_changes_nothing_and_a_later_batch_still_moves_it_on(messages):
    # given msg_1 reported sent in one batch
    now = datetime(2026, 3, 1, 12, 5, tzinfo=UTC)
    with messages.unit_of_work() as session:
        record_callbacks(session, [callback(S1, "sent")], deployment=DEPLOYMENT, now=now)

    # when a second batch brings sent again, then delivered, for it and for msg_3 in the other order
    with messages.unit_of_work() as session:
        batch = [callback(S1, "sent"), callback(S3, "delivered"), callback(S1, "delivered"), callback(S3, "sent")]
        outcomes = record_callbacks(session, batch, deployment=DEPLOYMENT, now=now)

    # then only the reports that move a message forward change it
    assert [outcome.changed for outcome in outcomes] == [False, True, True, False]
    assert [outcome.became_final for outcome in outcomes] == [False, True, True, False]
    assert stored(messages, "msg_1")[:2] == stored(messages, "msg_3")[:2] == ("delivered", "delivered")
