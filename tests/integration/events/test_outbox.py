"""The outbox on SQLite and PostgreSQL: an event is written in the change's transaction, only when an enabled
endpoint of the account takes its type, once per change, and handed to the dispatcher only after the commit."""

from datetime import UTC, datetime

import pytest

from shared.events import outbox
from shared.events.endpoints import create_endpoint, update_endpoint
from shared.models import Account, Message, WebhookEvent

NOW = datetime(2026, 11, 3, 15, 0, tzinfo=UTC)


@pytest.fixture
def dispatched():
    seen: list[str] = []
    outbox.on_written(seen.extend)
    yield seen
    outbox.on_written(None)


def given_an_account_with_a_message(database, account_id="acct_1") -> str:
    with database.unit_of_work() as session:
        session.add(Account(id=account_id, name="Grace Church"))
        session.flush()
        session.add(Message(id=f"msg_{account_id}", account_id=account_id, direction="inbound", to="+14155550123",
                            from_="+14155550100", body="See you Sunday", status="received", created_at=NOW,
                            updated_at=NOW))
    return f"msg_{account_id}"


def given_an_endpoint(database, account_id="acct_1", events=("message.received",)) -> str:
    with database.unit_of_work() as session:
        endpoint, _ = create_endpoint(session, account_id, url="https://hooks.example.com/creditq", events=list(events),
                                      description=None, now=NOW)
        return endpoint.id


def events_of(database) -> list[WebhookEvent]:
    with database.unit_of_work() as session:
        return list(session.query(WebhookEvent).order_by(WebhookEvent.id))


def test_a_message_event_carries_the_message_and_reaches_the_dispatcher_after_the_commit(database, dispatched):
    message_id = given_an_account_with_a_message(database)
    given_an_endpoint(database)
    # when the change's transaction writes the event
    with database.unit_of_work() as session:
        event_id = outbox.message_event(session, "message.received", message_id, now=NOW)
        assert event_id is not None and dispatched == []  # not before the commit
    # then it is stored with the message as it was, and dispatched once committed
    [event] = events_of(database)
    assert (event.id, event.type, event.account_id, event.key) == (event_id, "message.received", "acct_1",
                                                                  f"message.received:{message_id}")
    assert event.data["id"] == message_id and event.data["body"] == "See you Sunday"
    assert event.data["from"] == "+14155550100" and event.data["direction"] == "inbound"
    assert dispatched == [event_id]


def test_no_event_is_written_for_an_account_without_an_endpoint_taking_its_type(database, dispatched):
    message_id = given_an_account_with_a_message(database)
    given_an_endpoint(database, events=["message.delivered"])
    given_an_account_with_a_message(database, "acct_2")
    given_an_endpoint(database, "acct_2", events=["*"])
    with database.unit_of_work() as session:
        assert outbox.message_event(session, "message.received", message_id, now=NOW) is None
    assert events_of(database) == [] and dispatched == []


def test_a_disabled_endpoint_takes_no_events_and_a_wildcard_takes_all(database, dispatched):
    message_id = given_an_account_with_a_message(database)
    endpoint_id = given_an_endpoint(database, events=["*"])
    with database.unit_of_work() as session:
        update_endpoint(session, "acct_1", endpoint_id, enabled=False, now=NOW)
        assert outbox.message_event(session, "message.received", message_id, now=NOW) is None
        update_endpoint(session, "acct_1", endpoint_id, enabled=True, now=NOW)
        assert outbox.emit(session, "balance.low", account_id="acct_1", key="balance.low:acct_1:pool:2026-11-03",
                           data={"available": "4"}, now=NOW) is not None
    assert [event.type for event in events_of(database)] == ["balance.low"]


def test_a_replayed_change_writes_no_second_event_and_a_rolled_back_one_none(database, dispatched):
    message_id = given_an_account_with_a_message(database)
    given_an_endpoint(database)
    with database.unit_of_work() as session:
        first = outbox.message_event(session, "message.received", message_id, now=NOW)
    with database.unit_of_work() as session:
        assert outbox.message_event(session, "message.received", message_id, now=NOW) is None
    with pytest.raises(RuntimeError), database.unit_of_work() as session:
        outbox.emit(session, "balance.low", account_id="acct_1", key="k", data={}, now=NOW)
        raise RuntimeError("the change failed")
    assert [event.id for event in events_of(database)] == [first] and dispatched == [first]


def test_an_account_locked_is_news_once_until_it_is_unlocked(database, dispatched):
    given_an_account_with_a_message(database)
    given_an_endpoint(database, events=["account.locked"])  # the unlocks are kept too: they end a lock
    with database.unit_of_work() as session:
        assert outbox.account_unlocked(session, "acct_1", balance=0, now=NOW) is None  # no lock was announced
        assert outbox.account_locked(session, "acct_1", reason="r", balance=-500, now=NOW)
        assert outbox.account_locked(session, "acct_1", reason="r", balance=-900, now=NOW) is None
        assert outbox.account_unlocked(session, "acct_1", balance=0, now=NOW)
        assert outbox.account_locked(session, "acct_1", reason="r", balance=-1, now=NOW)
    assert sorted((event.key, event.data["balance"]) for event in events_of(database)) == [
        ("account.locked:acct_1:1", "-0.5"), ("account.locked:acct_1:2", "-0.001"),
        ("account.unlocked:acct_1:1", "0")]
