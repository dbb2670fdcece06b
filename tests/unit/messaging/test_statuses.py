"""Twilio status reports applied to a message: forward only, duplicates harmless, final exactly once."""

import threading
from datetime import UTC, datetime, timedelta

import pytest

from shared.messaging.statuses import record_status
from shared.models import Account, Message

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
SID = "SM" + "a" * 32


@pytest.fixture
def message(database) -> str:
    """An outbound message handed to Twilio: ours says sent, Twilio's last word was queued."""
    with database.unit_of_work() as session:
        session.add(Account(id="acct_1", name="Realty"))
        session.flush()
        session.add(Message(id="msg_1", account_id="acct_1", to="+14155550100", from_="+14155550199", body="hi",
                            status="sent", twilio_sid=SID, twilio_status="queued", created_at=T0, updated_at=T0))
    return "msg_1"


def report(database, status, *, sid=SID, at=T0, **fields):
    with database.unit_of_work() as session:
        return record_status(session, sid=sid, status=status, now=at, **fields)


def stored(database, message_id="msg_1") -> Message:
    with database.unit_of_work() as session:
        return session.get(Message, message_id)


def test_the_report_that_makes_a_message_final_says_so(database, message):
    # when Twilio reports sent, then delivered
    sent = report(database, "sent", at=T0 + timedelta(seconds=1))
    delivered = report(database, "delivered", num_segments=2, at=T0 + timedelta(seconds=2))

    # then only the delivered report made it final, and both vocabularies moved on
    assert (sent.message_id, sent.account_id, sent.became_final, sent.changed) == ("msg_1", "acct_1", False, True)
    assert (delivered.became_final, delivered.changed) == (True, True)
    row = stored(database)
    assert (row.status, row.twilio_status, row.twilio_segments) == ("delivered", "delivered", 2)
    assert row.updated_at.replace(tzinfo=UTC) == T0 + timedelta(seconds=2)


def test_a_duplicate_final_report_changes_nothing(database, message):
    report(database, "delivered", num_segments=1, at=T0 + timedelta(seconds=1))

    again = report(database, "delivered", num_segments=1, price="-0.00790", at=T0 + timedelta(seconds=5))

    assert (again.became_final, again.changed) == (False, False)
    row = stored(database)
    assert row.twilio_price is None and row.updated_at.replace(tzinfo=UTC) == T0 + timedelta(seconds=1)


def test_a_late_sent_after_delivered_is_ignored(database, message):
    report(database, "delivered")

    late = report(database, "sent")

    assert not late.changed and not late.became_final
    assert (stored(database).status, stored(database).twilio_status) == ("delivered", "delivered")


@pytest.mark.parametrize(("first", "second"), [("undelivered", "delivered"), ("failed", "delivered"),
                                               ("delivered", "failed"), ("delivered", "read")])
def test_a_final_status_never_changes(database, message, first, second):
    report(database, first, error_code=30003 if first != "delivered" else None)

    change = report(database, second)

    assert not change.changed and not change.became_final
    assert stored(database).status == first


def test_an_undelivered_report_keeps_twilios_error(database, message):
    change = report(database, "undelivered", error_code=30003, error_message="Unreachable destination handset")

    assert change.became_final
    row = stored(database)
    assert (row.status, row.error_code, row.error_message) == ("undelivered", 30003, "Unreachable destination handset")


def test_twilio_catching_up_does_not_move_our_status_back(database, message):
    # given ours says sent (the create returned) while Twilio still says queued
    # when Twilio reports sending
    change = report(database, "sending")

    # then Twilio's word is kept, ours stays sent
    assert change.changed and not change.became_final
    assert (stored(database).status, stored(database).twilio_status) == ("sent", "sending")


def test_a_price_from_an_earlier_report_is_not_erased_by_one_without(database, message):
    report(database, "sent", price="-0.00790", price_unit="USD", num_segments=1)

    report(database, "delivered")

    row = stored(database)
    assert (row.twilio_price, row.twilio_price_unit, row.twilio_segments) == ("-0.00790", "USD", 1)


def test_an_unknown_sid_is_left_to_reconciliation(database, message):
    assert report(database, "delivered", sid="SM" + "f" * 32) is None
    assert stored(database).status == "sent"


def test_a_status_twilio_never_documented_changes_nothing(database, message):
    change = report(database, "teleported")

    assert change is not None and not change.changed and stored(database).twilio_status == "queued"


def test_a_canceled_message_is_final(database, message):
    assert report(database, "canceled").became_final
    assert stored(database).status == "canceled"


def test_concurrent_duplicate_final_reports_make_it_final_exactly_once(database):
    # given 10 messages, each reported delivered by 4 threads at the same moment
    with database.unit_of_work() as session:
        session.add(Account(id="acct_1", name="Realty"))
        session.flush()
        for n in range(10):
            session.add(Message(id=f"msg_{n}", account_id="acct_1", to="+14155550100", from_="+14155550199",
                                body="hi", status="sent", twilio_sid=f"SM{n:032x}", twilio_status="queued",
                                created_at=T0, updated_at=T0))
    finals: list[str] = []
    lock = threading.Lock()

    for n in range(10):
        barrier = threading.Barrier(4)

        def deliver(sid=f"SM{n:032x}"):
            barrier.wait()
            change = report(database, "delivered", sid=sid)
            if change.became_final:
                with lock:
                    finals.append(change.message_id)

        threads = [threading.Thread(target=deliver) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    # then each message became final once, and only once
    assert sorted(finals) == sorted(f"msg_{n}" for n in range(10))
