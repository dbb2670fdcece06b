"""Status callbacks applied in group commits on PostgreSQL: batches that share messages and accounts, taken in
opposite orders, all commit (no deadlock), and every message is settled once."""

import threading
from datetime import UTC, datetime

import pytest
from sqlalchemy import func, select

from intake.enqueue import Enqueuer
from intake.routes.webhooks import CallbackBatcher
from shared.ledger import book
from shared.messaging import statuses
from shared.messaging.statuses import Callback, StatusChange
from shared.models import Account, Entry, Message
from shared.twilio.signatures import Credentials, SignedForm
from twilio_sim.signature import twilio_signature

pytestmark = pytest.mark.postgres

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
DEPLOYMENT = Credentials("AC" + "1" * 32, "deployment-token")
URL = "https://creditq.example/webhooks/twilio/status"
ACCOUNTS, PER_ACCOUNT = 3, 20


def callback(sid: str, status: str) -> Callback:
    params = {"MessageSid": sid, "MessageStatus": status, "AccountSid": DEPLOYMENT.account_sid}
    return Callback(SignedForm(URL, params, twilio_signature(DEPLOYMENT.auth_token, URL, params)), sid=sid,
                    status=status, num_segments=1)


@pytest.fixture
def sent_messages(postgres_database) -> list[str]:
    return send_messages(postgres_database)


def send_messages(database) -> list[str]:
    """Messages of three accounts, each with its hold, Twilio's sid stored, waiting for their callbacks; their sids."""
    sids = []
    with database.unit_of_work() as session:
        for a in range(ACCOUNTS):
            session.add(Account(id=f"acct_{a}", name=f"Account {a}", balance=100_000))
        session.flush()
        for a in range(ACCOUNTS):
            for n in range(PER_ACCOUNT):
                message_id, sid = f"msg_{a}_{n}", f"SM{a:02d}{n:030d}"
                hold = book.reserve(session, f"acct_{a}", 1_000, reference=message_id,
                                    idempotency_key=f"message:{message_id}:hold:0", ttl_seconds=900, now=T0)
                session.add(Message(id=message_id, account_id=f"acct_{a}", to="+14155550100", from_="+14155550199",
                                    body="Hi", status="sent", twilio_sid=sid, twilio_status="queued", hold_id=hold.id,
                                    segments=1, credits_estimated=1_000, created_at=T0, updated_at=T0))
                sids.append(sid)
    return sids


def test_batches_sharing_messages_in_opposite_orders_all_commit_and_settle_each_once(postgres_database,
                                                                                     sent_messages, fake_broker,
                                                                                     caplog):
    # given two writers, one taking the callbacks in one order and one in the reverse order, twice over
    batcher = CallbackBatcher(postgres_database, Enqueuer(fake_broker), DEPLOYMENT)
    forward = [callback(sid, status) for sid in sent_messages for status in ("sent", "delivered")]
    batches = [forward, list(reversed(forward))] * 2
    outcomes: list[list] = []

    # when they apply their batches at the same time
    threads = [threading.Thread(target=lambda batch=batch: outcomes.append(batcher.apply_batch(batch)))
               for batch in batches]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    # then no batch failed (a deadlock would have sent it back one callback at a time), each message became final once, and was charged once
    assert len(outcomes) == len(batches)
    assert "one by one" not in caplog.text
    assert all(isinstance(outcome, StatusChange) for batch in outcomes for outcome in batch)
    finals = [outcome.message_id for batch in outcomes for outcome in batch if outcome.became_final]
    assert sorted(finals) == sorted(f"msg_{a}_{n}" for a in range(ACCOUNTS) for n in range(PER_ACCOUNT))
    with postgres_database.unit_of_work() as session:
        assert session.scalar(select(func.count()).select_from(Entry).where(Entry.kind == "usage")) == len(finals)
        assert session.scalar(select(func.count()).select_from(Message).where(
            Message.status == "delivered", Message.credits_charged.is_not(None))) == len(finals)


def test_batches_whose_first_reports_change_nothing_still_take_their_messages_in_one_order(
        postgres_database, sent_messages, fake_broker, caplog, monkeypatch):
    # given two batches over the same two messages, each opening one message with a report that changes nothing
    # (Twilio's "queued" again) and the other with one that finishes it, then finishing the first
    s1, s2 = sent_messages[:2]
    first = [callback(s1, "queued"), callback(s1, "delivered"), callback(s2, "delivered")]
    second = [callback(s1, "delivered"), callback(s2, "queued"), callback(s2, "delivered")]
    batcher = CallbackBatcher(postgres_database, Enqueuer(fake_broker), DEPLOYMENT)
    # (both writers held after their batch statement until the other has run its own, if it can)
    together = threading.Barrier(2)
    apply_together = statuses._apply_together

    def held_after(*args, **kwargs):
        changed = apply_together(*args, **kwargs)
        try:
            together.wait(timeout=3)
        except threading.BrokenBarrierError:
            pass
        return changed

    monkeypatch.setattr(statuses, "_apply_together", held_after)
    outcomes: list[list] = []

    # when they are applied at the same time
    threads = [threading.Thread(target=lambda batch=batch: outcomes.append(batcher.apply_batch(batch)))
               for batch in (first, second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    # then neither deadlocked (which sends a batch back one callback at a time), and each message became final once
    assert "one by one" not in caplog.text
    finals = sorted(outcome.message_id for batch in outcomes for outcome in batch if outcome.became_final)
    assert finals == ["msg_0_0", "msg_0_1"]
