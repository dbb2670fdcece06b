"""Storing a sid on PostgreSQL. The sid's lock: the worker storing a sid and a status callback for it, each in a
transaction still open when the other begins, never lose the report, whichever takes the lock first. The same
statement tells whether the account takes message.sent: the event's own statement runs only where it does. The send
step first stores a sid by a statement of its own, which stores nothing where a report beat it or an event comes
with it: then the transaction does."""

import threading
import time
from datetime import UTC, datetime

import psycopg
import pytest
from sqlalchemy import func, select

from shared.events.endpoints import create_endpoint
from shared.messaging import sending as send_step
from shared.messaging.sending import _store_sid
from shared.messaging.statuses import Callback, record_callbacks
from shared.models import Account, EarlyStatus, Message, WebhookEvent
from shared.twilio.gateway import SentMessage
from shared.twilio.signatures import Credentials, SignedForm
from twilio_sim.signature import twilio_signature

pytestmark = pytest.mark.postgres

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
DEPLOYMENT = Credentials("AC" + "1" * 32, "deployment-token")
URL = "https://creditq.example/webhooks/twilio/status"
SID = "SM" + "7" * 32


@pytest.fixture
def sending(postgres_database):
    """A message on its way to Twilio: `sending`, no sid yet."""
    with postgres_database.unit_of_work() as session:
        session.add(Account(id="acct_1", name="Acme"))
        session.flush()
        session.add(Message(id="msg_1", account_id="acct_1", to="+14155550100", from_="+14155550199", body="Hi",
                            status="sending", segments=1, created_at=T0, updated_at=T0))
    return postgres_database


def delivered() -> Callback:
    params = {"MessageSid": SID, "MessageStatus": "delivered", "AccountSid": DEPLOYMENT.account_sid}
    return Callback(SignedForm(URL, params, twilio_signature(DEPLOYMENT.auth_token, URL, params)), sid=SID,
                    status="delivered", num_segments=1)


SENT = SentMessage(sid=SID, account_sid=DEPLOYMENT.account_sid, status="queued", num_segments=1, price=None,
                   price_unit=None)


def store_sid(database, result: list) -> None:
    with database.connection_unit_of_work() as work:
        result.append(_store_sid(work, "msg_1", SENT, T0))


def outcome(database) -> tuple[str, int]:
    with database.unit_of_work() as session:
        return (session.get(Message, "msg_1").status,
                session.scalar(select(func.count()).select_from(EarlyStatus)))


def store_alone_first(database, result: list) -> None:
    """As the send step stores a sid: alone first, in a transaction if a report beat it."""
    result.append(send_step._store(database, "msg_1", SENT, T0, settle_final=None))


@pytest.mark.parametrize("store", [store_sid, store_alone_first], ids=["in a transaction", "alone first"])
def test_a_report_kept_while_the_sid_is_being_stored_is_waited_for_and_applied(sending, store):
    # Given a callback's transaction that found no sid and kept its report, not committed yet
    with sending.unit_of_work() as session:
        assert record_callbacks(session, [delivered()], deployment=DEPLOYMENT, now=T0) == [None]
        # When the worker stores the sid meanwhile
        stored: list = []
        worker = threading.Thread(target=store, args=(sending, stored))
        worker.start()
        time.sleep(0.5)
        # Then it waits for the sid's lock, the callback's transaction holding it
        assert worker.is_alive() and stored == []
    worker.join(timeout=30)
    # and once the callback committed, the worker found the kept report and its transaction applied it
    assert stored == ["delivered"]
    assert outcome(sending) == ("delivered", 0)


def test_a_report_that_comes_while_the_sid_is_being_stored_waits_for_it_and_finds_it(sending):
    # Given the worker's transaction that stored the sid, not committed yet
    with sending.connection_unit_of_work() as work:
        assert _store_sid(work, "msg_1", SENT, T0) == "queued"
        # When a report of it comes meanwhile
        outcomes: list = []

        def report() -> None:
            with sending.unit_of_work() as callback_session:
                outcomes.extend(record_callbacks(callback_session, [delivered()], deployment=DEPLOYMENT, now=T0))

        callback = threading.Thread(target=report)
        callback.start()
        time.sleep(0.5)
        # Then it waits for the sid's lock
        assert callback.is_alive() and outcomes == []
    callback.join(timeout=30)
    # and once the sid is committed it finds the message and applies the report itself: nothing is kept
    assert [change.became_final for change in outcomes] == [True]
    assert outcome(sending) == ("delivered", 0)


def test_storing_a_sid_writes_message_sent_only_for_an_account_whose_endpoint_takes_it(postgres_database,
                                                                                        monkeypatch):
    # Given two messages on their way to Twilio, of an account with an endpoint taking message.sent and of one without
    with postgres_database.unit_of_work() as session:
        session.add_all([Account(id="acct_hooked", name="Hooked"), Account(id="acct_plain", name="Plain")])
        session.flush()
        create_endpoint(session, "acct_hooked", url="https://hooks.example/creditq", events=["message.sent"],
                        description=None, now=T0)
        for account_id in ("acct_hooked", "acct_plain"):
            session.add(Message(id=f"msg_{account_id}", account_id=account_id, to="+14155550100",
                                from_="+14155550199", body="Hi", status="sending", segments=1, created_at=T0,
                                updated_at=T0))
    events_run: list[str] = []
    write_event = send_step.message_event
    monkeypatch.setattr(send_step, "message_event", lambda session, event_type, message_id, **kwargs: (
        events_run.append(message_id), write_event(session, event_type, message_id, **kwargs))[1])
    # When each one's sid is stored
    for n, account_id in enumerate(("acct_hooked", "acct_plain")):
        sent = SentMessage(sid=f"SM{n:032d}", account_sid=DEPLOYMENT.account_sid, status="queued", num_segments=1,
                           price=None, price_unit=None)
        with postgres_database.connection_unit_of_work() as work:
            assert _store_sid(work, f"msg_{account_id}", sent, T0) == "queued"
    # Then the hooked account's message.sent is written, and the other account's step ran no event statement
    with postgres_database.unit_of_work() as session:
        written = session.execute(select(WebhookEvent.account_id, WebhookEvent.type)).all()
    assert written == [("acct_hooked", "message.sent")]
    assert events_run == ["msg_acct_hooked"]


def test_storing_a_sid_takes_its_lock_and_the_reports_that_beat_it_in_one_statement(sending, monkeypatch):
    # Given a report that beat the sid, kept, and every statement psycopg is given recorded
    with sending.unit_of_work() as session:
        assert record_callbacks(session, [delivered()], deployment=DEPLOYMENT, now=T0) == [None]
    statements = []
    execute = psycopg.Cursor.execute
    monkeypatch.setattr(psycopg.Cursor, "execute", lambda cursor, query, *args, **kwargs: (
        statements.append(str(query)), execute(cursor, query, *args, **kwargs))[1])

    # When the worker stores the sid
    stored: list = []
    store_sid(sending, stored)
    storing = list(statements)

    # Then the statement that stored it took the lock and the report, which no later statement looked for again
    assert stored == ["delivered"] and outcome(sending) == ("delivered", 0)
    assert "take_early_statuses" in storing[0] and storing[0].startswith("UPDATE messages")
    assert not [sql for sql in storing[1:] if "early_statuses" in sql or "pg_advisory" in sql]


def recorded_statements(monkeypatch) -> list[tuple[str, bool]]:
    """(statement, whether its connection was in autocommit) of every statement psycopg is given from now on."""
    statements: list[tuple[str, bool]] = []
    execute = psycopg.Cursor.execute
    monkeypatch.setattr(psycopg.Cursor, "execute", lambda cursor, query, *args, **kwargs: (
        statements.append((str(query), cursor.connection.autocommit)), execute(cursor, query, *args, **kwargs))[1])
    return statements


def test_a_sid_nothing_comes_with_is_stored_by_one_statement_outside_any_transaction(sending, monkeypatch):
    # Given a message on its way to Twilio, no report of it yet, no endpoint of its account, statements recorded
    statements = recorded_statements(monkeypatch)

    # When the send step stores the sid Twilio answered
    status = send_step._store(sending, "msg_1", SENT, T0, settle_final=None)
    storing = list(statements)

    # Then one statement, in autocommit, stored it and took the sid's lock to look for reports
    assert status == "queued" and outcome(sending) == ("queued", 0)
    (statement, autocommit), = storing
    assert statement.startswith("UPDATE messages") and "early_statuses_waiting" in statement and autocommit
    with sending.unit_of_work() as session:
        assert session.get(Message, "msg_1").twilio_sid == SID


def test_a_report_that_beat_the_sid_sends_its_store_into_the_transaction_that_applies_it(sending, monkeypatch):
    # Given a report that beat the sid, kept
    with sending.unit_of_work() as session:
        assert record_callbacks(session, [delivered()], deployment=DEPLOYMENT, now=T0) == [None]
    statements = recorded_statements(monkeypatch)

    # When the send step stores the sid
    status = send_step._store(sending, "msg_1", SENT, T0, settle_final=None)
    alone, in_transaction = statements[:2]

    # Then the statement alone stored nothing, and the transaction after it took the report and applied it
    assert status == "delivered" and outcome(sending) == ("delivered", 0)
    assert "early_statuses_waiting" in alone[0] and alone[1]
    assert "take_early_statuses" in in_transaction[0] and not in_transaction[1]


def test_a_sid_whose_account_takes_message_sent_is_stored_with_its_event(postgres_database):
    # Given a message on its way to Twilio, of an account with an endpoint taking message.sent
    with postgres_database.unit_of_work() as session:
        session.add(Account(id="acct_hooked", name="Hooked"))
        session.flush()
        create_endpoint(session, "acct_hooked", url="https://hooks.example/creditq", events=["message.sent"],
                        description=None, now=T0)
        session.add(Message(id="msg_hooked", account_id="acct_hooked", to="+14155550100", from_="+14155550199",
                            body="Hi", status="sending", segments=1, created_at=T0, updated_at=T0))

    # When the send step stores its sid
    assert send_step._store(postgres_database, "msg_hooked", SENT, T0, settle_final=None) == "queued"

    # Then the event was written with it
    with postgres_database.unit_of_work() as session:
        assert session.execute(select(WebhookEvent.account_id, WebhookEvent.type)).all() == [
            ("acct_hooked", "message.sent")]
        assert session.get(Message, "msg_hooked").twilio_sid == SID
