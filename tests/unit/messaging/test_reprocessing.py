"""Toll-free reprocessing: which finished texts are resent from the account's toll-free number, once, at what price."""

from datetime import UTC, datetime

import pytest
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from shared.messaging.rates import TOLL_FREE_RESEND
from shared.messaging.reprocessing import resend_from_toll_free, resend_of
from shared.messaging.settlement import Settled
from shared.models import Account, Message, PhoneNumber

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
LOCAL, TOLL_FREE, SHORT_CODE = "+14155550199", "+18005550100", "+14155550177"
RECIPIENT = "+14155550100"
BODY = "Open house moved to Sunday 2pm"


@pytest.fixture
def account(sqlite_database):
    """An account with reprocessing on, a local number, a short code and a toll-free number."""
    with sqlite_database.unit_of_work() as session:
        session.add(Account(id="acct_1", name="Realty", toll_free_reprocessing=True))
        session.flush()
        for phone, kind in ((LOCAL, "long_code"), (SHORT_CODE, "short_code"), (TOLL_FREE, "toll_free")):
            session.add(PhoneNumber(account_id="acct_1", phone=phone, type=kind))
    return "acct_1"


def finished(database, *, message_id="msg_1", status="undelivered", error_code=30007, from_=LOCAL, **fields) -> str:
    """An outbound text Twilio has finished with."""
    with database.unit_of_work() as session:
        session.add(Message(id=message_id, account_id="acct_1", to=RECIPIENT, from_=from_, body=BODY, status=status,
                            error_code=error_code, segments=1, credits_estimated=1000, created_at=T0, updated_at=T0,
                            **fields))
    return message_id


def resend(database, message_id="msg_1") -> str | None:
    with database.unit_of_work() as session:
        return resend_from_toll_free(session, settled(session, message_id), now=T0)


def settled(session, message_id: str) -> Settled:
    """What the settlement of a finished message tells the resend."""
    message = session.get(Message, message_id)
    return Settled("settled", message.id, message.account_id, message.status, message.error_code)


def messages(database) -> int:
    with database.unit_of_work() as session:
        return session.scalar(select(func.count()).select_from(Message))


@pytest.mark.parametrize(("characters", "credits"), [(1, 1), (160, 1), (161, 2), (320, 2), (321, 3), (1600, 10)])
def test_a_resend_costs_one_credit_per_started_160_characters(characters, credits):
    assert TOLL_FREE_RESEND.price("a" * characters) == credits * 1000


def test_the_resend_price_does_not_follow_segments():
    # given a UCS-2 body of 100 characters: two segments at any rate card's price
    body = "ж" * 100

    # then the resend costs one credit: its length, not its segments
    assert TOLL_FREE_RESEND.price(body) == 1000


@pytest.mark.parametrize(("status", "code"), [("undelivered", 30007), ("undelivered", 30034), ("failed", 30007),
                                              ("failed", 30034)])
def test_a_filtered_text_from_a_local_number_is_resent_from_the_toll_free_number(sqlite_database, account, status,
                                                                                  code):
    # given a text from the local number that carriers filtered
    original = finished(sqlite_database, status=status, error_code=code)

    # when it is settled
    resend_id = resend(sqlite_database, original)

    # then a new message waits to go to the same recipient with the same body from the toll-free number,
    # holding the resend's price, linked both ways
    with sqlite_database.unit_of_work() as session:
        made = session.get(Message, resend_id)
        assert (made.to, made.from_, made.body, made.status) == (RECIPIENT, TOLL_FREE, BODY, "accepted")
        assert (made.credits_estimated, made.reprocessed_from) == (1000, original)
        assert resend_of(session, original) == resend_id
        assert session.get(Message, original).status == status  # the original stays as it is


@pytest.mark.parametrize("unqualified", [
    pytest.param({"error_code": 30003}, id="another error"),
    pytest.param({"status": "delivered", "error_code": None}, id="delivered"),
    pytest.param({"from_": TOLL_FREE}, id="sent from the toll-free number"),
    pytest.param({"from_": SHORT_CODE}, id="sent from a short code"),
    pytest.param({"media_urls": ["https://example.com/house.jpg"]}, id="an MMS"),
    pytest.param({"direction": "inbound"}, id="inbound"),
])
def test_other_texts_are_not_resent(sqlite_database, account, unqualified):
    original = finished(sqlite_database, **unqualified)

    assert resend(sqlite_database, original) is None
    assert messages(sqlite_database) == 1


def test_nothing_is_resent_while_the_setting_is_off(sqlite_database, account):
    with sqlite_database.unit_of_work() as session:
        session.get(Account, account).toll_free_reprocessing = False
    original = finished(sqlite_database)

    assert resend(sqlite_database, original) is None
    assert messages(sqlite_database) == 1


def test_nothing_is_resent_without_a_toll_free_number(sqlite_database, account):
    with sqlite_database.unit_of_work() as session:
        session.execute(PhoneNumber.__table__.delete().where(PhoneNumber.type == "toll_free"))
    original = finished(sqlite_database)

    assert resend(sqlite_database, original) is None
    assert messages(sqlite_database) == 1


def test_a_released_toll_free_number_sends_no_resend_and_a_live_one_does(sqlite_database, account):
    # given the account's first toll-free number released (as a cancel leaves it, until added again)
    with sqlite_database.unit_of_work() as session:
        session.execute(PhoneNumber.__table__.update().where(PhoneNumber.phone == TOLL_FREE).values(released_at=T0))
    original = finished(sqlite_database)

    # when a filtered text settles, nothing is resent from the released number
    assert resend(sqlite_database, original) is None
    assert messages(sqlite_database) == 1

    # and when the account has a live toll-free number besides, the next filtered text goes from that one
    with sqlite_database.unit_of_work() as session:
        session.add(PhoneNumber(account_id=account, phone="+18885550100", type="toll_free"))
    second = finished(sqlite_database, message_id="msg_2")
    with sqlite_database.unit_of_work() as session:
        assert session.get(Message, resend(sqlite_database, second)).from_ == "+18885550100"


def test_a_resend_filtered_in_turn_is_not_resent_again(sqlite_database, account):
    # given a resend that itself ended filtered (as if sent from a local number)
    original = finished(sqlite_database)
    finished(sqlite_database, message_id="msg_2", reprocessed_from=original)

    # when it is settled
    # then nothing more is made
    assert resend(sqlite_database, "msg_2") is None
    assert messages(sqlite_database) == 2


def test_settling_twice_makes_one_resend_and_hands_it_out_until_it_is_sent(sqlite_database, account):
    # given a filtered text whose settle step ran (the resend was made)
    original = finished(sqlite_database)
    first = resend(sqlite_database, original)

    # when the step runs again (a duplicated callback, a redelivered job)
    again = resend(sqlite_database, original)

    # then it names the same resend, to enqueue again, and makes no second one
    assert again == first and messages(sqlite_database) == 2

    # and once the resend left for Twilio, a further replay hands out nothing
    with sqlite_database.unit_of_work() as session:
        session.get(Message, first).status = "queued"
    assert resend(sqlite_database, original) is None
    assert messages(sqlite_database) == 2


def test_the_database_admits_one_resend_per_original(sqlite_database, account):
    # given a filtered text already resent
    original = finished(sqlite_database)
    resend(sqlite_database, original)

    # when a second message claims to resend it (two settle jobs racing past every check)
    # then the unique link refuses it
    with pytest.raises(IntegrityError), sqlite_database.unit_of_work() as session:
        session.add(Message(id="msg_3", account_id="acct_1", to=RECIPIENT, from_=TOLL_FREE, body=BODY,
                            status="accepted", reprocessed_from=original, created_at=T0, updated_at=T0))
    assert messages(sqlite_database) == 2


def test_the_resend_of_an_automated_text_keeps_to_quiet_hours_and_a_reply_goes_at_once(sqlite_database, account):
    # given a filtered campaign text and a filtered text typed now
    campaign_text = finished(sqlite_database, campaign_id="cmp_1")
    reply = finished(sqlite_database, message_id="msg_2")

    # when both are resent
    with sqlite_database.unit_of_work() as session:
        automated = session.get(Message, resend_from_toll_free(session, settled(session, campaign_text), now=T0))
        immediate = session.get(Message, resend_from_toll_free(session, settled(session, reply), now=T0))

        # then the campaign's resend is automated (the send step holds it to quiet hours), the reply's is not
        assert (automated.send_at.replace(tzinfo=UTC), immediate.send_at) == (T0, None)
