"""Creating a voice broadcast: a call per distinct number, opted-out ones skipped, bad input named field by field,
and steering that refuses what a broadcast's state does not allow."""

from datetime import UTC, datetime

import pytest
from sqlalchemy import select

from shared.errors import Conflict, InsufficientCredits, ValidationFailed
from shared.ledger import book
from shared.messaging.rates import default_rate_card
from shared.models import Account, Call, OptOut, PhoneNumber
from shared.voice import broadcasts
from shared.voice.broadcasts import BroadcastRequest

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
NUMBER = "+14155550111"


@pytest.fixture
def db(sqlite_database):
    with sqlite_database.unit_of_work() as session:
        session.add(Account(id="acct_1", name="Church"))
        session.flush()
        session.add_all([PhoneNumber(account_id="acct_1", phone=NUMBER, type="long_code"),
                         OptOut(account_id="acct_1", phone="+14155550102", source="api")])
        book.grant(session, "acct_1", 100_000, "purchase", granted_at=T0, idempotency_key="grant")
    return sqlite_database


def create(db, **fields):
    request = BroadcastRequest(**{"name": "Reminder", "from_": NUMBER, "say": "Service at ten",
                                  "recipients": [{"to": "+14155550101"}, {"to": "+14155550102"},
                                                 {"to": "+1 (415) 555-0101"}], **fields})
    with db.unit_of_work() as session:
        broadcast, to_place = broadcasts.create_broadcast(session, "acct_1", request, rate_card=default_rate_card(),
                                                          now=T0)
        return broadcast.id, to_place, broadcasts.broadcast_view(session, broadcast)


def test_each_distinct_number_becomes_a_call_and_an_opted_out_one_is_skipped(db):
    # when a broadcast names a number twice (in two spellings) and an opted-out number
    broadcast_id, to_place, view = create(db, machine_detection=True, expected_minutes=2)

    # then two calls exist, one to place and one skipped, and the estimate counts both numbers
    with db.unit_of_work() as session:
        calls = {c.to: c for c in session.scalars(select(Call).where(Call.broadcast_id == broadcast_id))}
    assert set(calls) == {"+14155550101", "+14155550102"}
    assert to_place == [calls["+14155550101"].id]
    assert (calls["+14155550102"].status, calls["+14155550102"].credits_charged) == ("skipped", 0)
    assert view["counts"]["total"] == 2 and view["counts"]["skipped"] == 1 and view["counts"]["queued"] == 1
    assert view["credits_estimated"] == "9"  # 2 numbers x (2 minutes x 2 + 0.5)


def test_bad_fields_are_named_each(db):
    with pytest.raises(ValidationFailed) as refused:
        create(db, from_="+14155550199", say=None, recipients=[{"to": "nope"}], expected_minutes=0)

    assert {"from", "say", "recipients[0].to", "expected_minutes"} <= set(refused.value.errors)


def test_a_recipient_naming_a_field_it_does_not_take_is_refused_naming_it_and_nothing_is_stored(db):
    with pytest.raises(ValidationFailed) as refused:
        create(db, recipients=[{"to": "+14155550101"}, {"to": "+14155550102", "name": "Ann", "extra": 1}])

    assert set(refused.value.errors) == {"recipients[1].extra", "recipients[1].name"}
    with db.unit_of_work() as session:
        assert session.scalars(select(Call)).all() == []


def test_an_account_that_cannot_pay_a_minute_is_refused(db):
    with db.unit_of_work() as session:
        book.charge_pool(session, "acct_1", 99_000, kind="usage", idempotency_key="spent", now=T0)
    with pytest.raises(InsufficientCredits):
        create(db)


def test_steering_follows_the_broadcasts_state(db):
    broadcast_id, _, _ = create(db)

    def steer(verb):
        with db.unit_of_work() as session:
            return broadcasts.broadcast_view(session, broadcasts.steer(session, broadcast_id, verb,
                                                                       account_id="acct_1", now=T0))["status"]

    assert steer("pause") == "paused"
    with pytest.raises(Conflict):
        steer("pause")
    assert steer("resume") == "running"
    assert steer("cancel") == "canceled"
    with pytest.raises(Conflict):
        steer("resume")
    with db.unit_of_work() as session:
        assert {c.status for c in session.scalars(select(Call).where(Call.broadcast_id == broadcast_id))} == {
            "canceled", "skipped"}
