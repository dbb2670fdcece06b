"""Retention redacts old message bodies and recipients' numbers; erasure redacts one number's at once. Neither
touches the ledger: balances, entries and `ledger verify` are the same after."""

from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select

from shared.ledger.verify import verify
from shared.messaging.opt_outs import opt_out
from shared.models import Account, Call, Campaign, CampaignRecipient, Entry, Message, OptOut, WebhookEvent
from shared.operations.erasure import erase_phone
from shared.operations.retention import REDACTED, redact_expired
from tests.integration.messaging.test_send_pipeline import (  # noqa: F401
    RECIPIENT,
    _callback_receiver_server,
    _simulator_server,
    accept,
    background_loop,
    callback_receiver,
    gateways,
    make_account,
    report,
    send,
    settle,
    simulator,
    throttle,
)

OTHER = "+14155550199"


def delivered(database, account_id, gateways, throttle, to: str, body: str) -> str:  # noqa: F811
    message_id = accept(database, account_id, to=to, body=body)
    send(database, message_id, gateways, throttle)
    report(database, message_id, "delivered", 1)
    settle(database, message_id)
    return message_id


def ledger_state(database) -> tuple:
    with database.unit_of_work() as session:
        balances = sorted(session.execute(select(Account.id, Account.balance, Account.held)).all())
        entries = sorted(session.execute(select(Entry.reference, Entry.kind, Entry.amount)).all(), key=str)
        return balances, entries, verify(session)


def test_retention_redacts_what_is_old_and_finished_and_leaves_the_ledger_clean(database, gateways,  # noqa: F811
                                                                                 throttle):  # noqa: F811
    # given two delivered, settled messages and one still waiting to be sent
    account_id = make_account(database, 10)
    sent = [delivered(database, account_id, gateways, throttle, RECIPIENT, f"private note {n}") for n in range(2)]
    waiting = accept(database, account_id, to=OTHER, body="not sent yet")
    before = ledger_state(database)
    assert before[2] == []

    # when the retention pass runs 31 days later with 30 days of retention
    later = datetime.now(UTC) + timedelta(days=31)
    redacted = redact_expired(database, now=later, retention_days=30, batch=1)

    # then the finished messages lost their body and number, and kept what they cost
    assert redacted.messages == 2
    with database.unit_of_work() as session:
        for message_id in sent:
            message = session.get(Message, message_id)
            assert (message.body, message.to, message.status) == ("", REDACTED, "delivered")
            assert message.credits_charged == 1000 and message.redacted_at is not None
        assert session.get(Message, waiting).body == "not sent yet"
    # and the ledger is exactly as it was, and clean
    assert ledger_state(database) == before
    # and a second pass redacts nothing again
    assert redact_expired(database, now=later, retention_days=30).messages == 0


def test_retention_keeps_what_is_younger_than_the_retention(database, gateways, throttle):  # noqa: F811
    account_id = make_account(database, 10)
    message_id = delivered(database, account_id, gateways, throttle, RECIPIENT, "recent")

    assert redact_expired(database, now=datetime.now(UTC) + timedelta(days=29), retention_days=30).messages == 0
    with database.unit_of_work() as session:
        assert session.get(Message, message_id).body == "recent"


def test_retention_redacts_an_ended_campaigns_recipients_and_old_events(database):
    now = datetime.now(UTC)
    account_id = make_account(database, 0)
    with database.unit_of_work() as session:
        session.add(Campaign(id="cmp_1", account_id=account_id, name="Open house", from_="+14155550000",
                             status="running", send_at=now, created_at=now, updated_at=now, completed_at=now))
        session.add(Campaign(id="cmp_2", account_id=account_id, name="Still running", from_="+14155550000",
                             status="running", send_at=now, created_at=now, updated_at=now))
        session.flush()
        session.add_all([CampaignRecipient(campaign_id=campaign, position=0, to=RECIPIENT, fields={"name": "Ann"})
                         for campaign in ("cmp_1", "cmp_2")])
        session.add(WebhookEvent(id="evt_1", account_id=account_id, type="message.delivered", key="k1", created_at=now,
                                 data={"id": "msg_1", "direction": "outbound", "to": RECIPIENT,
                                       "from": "+14155550000", "body": "private", "segments": 1}))

    redacted = redact_expired(database, now=now + timedelta(days=8), retention_days=7)

    assert (redacted.campaigns, redacted.events) == (1, 1)
    with database.unit_of_work() as session:
        recipients = dict(session.execute(select(CampaignRecipient.campaign_id, CampaignRecipient.to)).all())
        assert recipients == {"cmp_1": REDACTED, "cmp_2": RECIPIENT}
        assert session.get(WebhookEvent, "evt_1").data == {
            "id": "msg_1", "direction": "outbound", "to": REDACTED, "from": "+14155550000", "body": "", "segments": 1}


def test_erasing_a_number_redacts_its_messages_everywhere_and_keeps_its_opt_out(database, gateways,  # noqa: F811
                                                                                throttle):  # noqa: F811
    # given two accounts that texted the number, one of which it asked to stop, and a text to another number
    first, second = make_account(database, 10), make_account(database, 10, sender="+14155550001")
    theirs = [delivered(database, first, gateways, throttle, RECIPIENT, "hello Ann"),
              delivered(database, first, gateways, throttle, OTHER, "hello Bob")]
    with database.unit_of_work() as session:
        opt_out(session, first, RECIPIENT, source="stop_keyword")
    in_flight = accept(database, second, to=RECIPIENT, body="queued for Ann", sender="+14155550001")
    before = ledger_state(database)

    # when the operator erases the number
    with database.unit_of_work() as session:
        erased = erase_phone(session, RECIPIENT, now=datetime.now(UTC))

    # then its finished message is redacted, the one in flight is counted and left, the other number's untouched
    assert (erased.messages, erased.in_flight, erased.opt_outs_kept) == (1, 1, 1)
    with database.unit_of_work() as session:
        ann, bob = (session.get(Message, message_id) for message_id in theirs)
        assert (ann.body, ann.to) == ("", REDACTED) and (bob.body, bob.to) == ("hello Bob", OTHER)
        assert session.get(Message, in_flight).body == "queued for Ann"
        # and the opt-out stays, so the number is never texted again
        assert session.scalar(select(func.count()).select_from(OptOut).where(OptOut.phone == RECIPIENT)) == 1
    assert ledger_state(database) == before
    # and erasing again finds nothing more
    with database.unit_of_work() as session:
        assert erase_phone(session, RECIPIENT, now=datetime.now(UTC)).messages == 0


def test_erasing_a_number_redacts_its_finished_calls_and_counts_those_in_flight(database):
    # given a voicemail the number left, with its recording and transcription, a call forwarded to it, and a call
    # to it still ringing
    with database.unit_of_work() as session:
        session.add(Account(id="acct_voice", name="Voice"))
        session.flush()
        common = dict(account_id="acct_voice", max_minutes=5, rate=2000, credits_estimated=0, attempts=0,
                      created_at=datetime.now(UTC), updated_at=datetime.now(UTC))
        session.add_all([
            Call(id="call_vm", direction="inbound", to=OTHER, from_=RECIPIENT, status="completed",
                 recording_url="https://api.twilio.com/rec/RE1", transcription="Hi, it's Ann, call me back", **common),
            Call(id="call_fw", direction="inbound", to=OTHER, from_="+14155550123", connect_to=RECIPIENT,
                 status="completed", **common),
            Call(id="call_ringing", direction="outbound", to=RECIPIENT, from_=OTHER, say="Hi", status="ringing",
                 **common)])

    # when the operator erases the number, written as people write it
    with database.unit_of_work() as session:
        erased = erase_phone(session, "+1 (415) 555-0100", now=datetime.now(UTC))

    # then the finished calls no longer name it nor keep what it said; the ringing one is counted and left
    assert (erased.phone, erased.calls, erased.in_flight) == (RECIPIENT, 2, 1)
    with database.unit_of_work() as session:
        voicemail, forwarded, ringing = (session.get(Call, id_) for id_ in ("call_vm", "call_fw", "call_ringing"))
        assert (voicemail.from_, voicemail.to, voicemail.recording_url, voicemail.transcription) == (
            REDACTED, OTHER, None, None)
        assert (forwarded.connect_to, forwarded.from_) == (REDACTED, "+14155550123")
        assert ringing.to == RECIPIENT
    # and erasing again redacts nothing more
    with database.unit_of_work() as session:
        assert erase_phone(session, RECIPIENT, now=datetime.now(UTC)).calls == 0
