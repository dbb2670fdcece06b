"""A batch of status callbacks reads its messages in one statement, and the messages it finished in one more, however
many callbacks it holds: each read per callback was a round trip for every one of them. An account without a webhook
endpoint costs the batch no event statement."""

from datetime import UTC, datetime

from sqlalchemy import event, func, select

from intake.enqueue import Enqueuer
from intake.routes.webhooks import CallbackBatcher
from shared.ledger import book
from shared.messaging.statuses import Callback, StatusChange
from shared.models import Account, Entry, Message
from shared.twilio.signatures import Credentials, SignedForm
from twilio_sim.signature import twilio_signature

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
DEPLOYMENT = Credentials("AC" + "1" * 32, "deployment-token")
URL = "https://creditq.example/webhooks/twilio/status"


def callback(sid: str, status: str) -> Callback:
    params = {"MessageSid": sid, "MessageStatus": status, "AccountSid": DEPLOYMENT.account_sid}
    return Callback(SignedForm(URL, params, twilio_signature(DEPLOYMENT.auth_token, URL, params)), sid=sid,
                    status=status, num_segments=1)


def test_a_batch_reads_its_messages_once_and_the_ones_it_finished_once(sqlite_database, fake_broker):
    # Given 12 messages with Twilio, each with its hold
    sids = []
    with sqlite_database.unit_of_work() as session:
        session.add(Account(id="acct_1", name="Acme", balance=100_000))
        session.flush()
        for n in range(12):
            hold = book.reserve(session, "acct_1", 1_000, reference=f"msg_{n}", idempotency_key=f"hold-{n}",
                                ttl_seconds=900, now=T0)
            session.add(Message(id=f"msg_{n:02d}", account_id="acct_1", to="+14155550100", from_="+14155550199",
                                body="Hi", status="sent", twilio_sid=f"SM{n:032d}", twilio_status="queued",
                                hold_id=hold.id, segments=1, credits_estimated=1_000, created_at=T0, updated_at=T0))
            sids.append(f"SM{n:032d}")
    reads: list[str] = []
    events: list[str] = []

    def count_message_reads(_connection, _cursor, statement, *_args):
        if statement.lstrip().upper().startswith("SELECT") and "FROM messages" in statement:
            reads.append(statement)
        if "INSERT INTO webhook_events" in statement:
            events.append(statement)

    # When one batch brings each a delivery report and an unknown sid's report
    batcher = CallbackBatcher(sqlite_database, Enqueuer(fake_broker), DEPLOYMENT)
    event.listen(sqlite_database.engine, "before_cursor_execute", count_message_reads)
    try:
        outcomes = batcher.apply_batch([callback(sid, "delivered") for sid in sids] + [callback("SM" + "9" * 32,
                                                                                                  "delivered")])
    finally:
        event.remove(sqlite_database.engine, "before_cursor_execute", count_message_reads)

    # Then every message became final and was charged, the unknown sid was kept for later, and the messages were
    # read three times in all: the batch's sids, the unknown sid again under its lock, the finished ones
    assert [type(outcome) for outcome in outcomes] == [StatusChange] * 12 + [type(None)]
    assert all(outcome.became_final for outcome in outcomes[:12])
    with sqlite_database.unit_of_work() as session:
        assert session.scalar(select(func.count()).select_from(Entry).where(Entry.kind == "usage")) == 12
    assert len(reads) == 3, reads
    # and the account, which has no webhook endpoint, cost no event statement
    assert events == []

