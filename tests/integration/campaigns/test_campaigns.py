"""Campaigns end to end through the domain steps and the in-process Twilio simulator, on SQLite and PostgreSQL.

The clock is explicit: every step gets `now`, so quiet hours and drip days are exact.
"""

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import event, func, select

from shared.campaigns import creation, fan_out
from shared.campaigns.creation import CampaignRequest, create_campaign
from shared.campaigns.steering import campaign_view, cancel_campaign, pause_campaign, resume_campaign
from shared.errors import Conflict, ValidationFailed
from shared.ledger import book
from shared.ledger.verify import verify
from shared.messaging import sweeper
from shared.messaging.opt_outs import FROM_API, FROM_STOP_KEYWORD, opt_out
from shared.messaging.quiet_hours import parse_window
from shared.messaging.send_policy import set_quiet_hours
from shared.messaging.sending import send_message
from shared.messaging.settlement import settle_message
from shared.messaging.statuses import record_status
from shared.models import Campaign, CampaignRecipient, Hold, Message
from tests.integration.messaging.test_send_pipeline import (  # noqa: F401
    CARD,
    SENDER,
    UNCAPPED,
    gateways,
    make_account,
    throttle,
)
from tests.twilio_sim_fixtures import (  # noqa: F401
    _callback_receiver_server,
    _simulator_server,
    background_loop,
    callback_receiver,
    simulator,
)

NOON_NEW_YORK = datetime(2026, 11, 10, 17, 0, tzinfo=UTC)
NIGHT_NEW_YORK = datetime(2026, 11, 10, 8, 0, tzinfo=UTC)  # 03:00 EST
ANN, BO, CY = "+12125550101", "+12125550102", "+12125550103"  # New York numbers


def create(database, account_id: str, *, at: datetime = NOON_NEW_YORK, body: str = "Hi {{ name }}",
           campaign_id: str | None = None, sender: str = SENDER, **request):
    request.setdefault("recipients", [{"to": ANN, "fields": {"name": "Ann"}}, {"to": BO, "fields": {"name": "Bo"}}])
    campaign, estimate = create_campaign(database, account_id, CampaignRequest(
        name="Spring open house", from_=sender, body=body, **request), rate_card=CARD, now=at, cap=UNCAPPED,
        campaign_id=campaign_id)
    return campaign.id, estimate


def fan_out_step(database, campaign_id: str, step: int = 0, *, at: datetime = NOON_NEW_YORK) -> list[str]:
    with database.unit_of_work() as session:
        started = fan_out.start_step(session, campaign_id, step, now=at)
    ids = []
    for chunk in range(started.chunks):
        with database.unit_of_work() as session:
            ids += fan_out.fan_out_chunk(session, campaign_id, step, chunk, rate_card=CARD, hold_ttl_seconds=900,
                                         now=at)
    return ids


def send(database, message_id, gateways, throttle, at=NOON_NEW_YORK) -> str:  # noqa: F811
    return send_message(database, message_id, gateway_for=gateways, throttle=throttle, hold_ttl_seconds=900,
                        now=lambda: at)


def deliver(database, message_id: str, at=NOON_NEW_YORK) -> str:
    with database.unit_of_work() as session:
        sid = session.get(Message, message_id).twilio_sid
        record_status(session, sid=sid, status="delivered", num_segments=1, now=at)
    with database.unit_of_work() as session:
        return settle_message(session, message_id, rate_card=CARD, now=at).outcome


def view(database, campaign_id: str) -> dict:
    with database.unit_of_work() as session:
        return campaign_view(session, session.get(Campaign, campaign_id))


def messages_of(database, campaign_id: str) -> list[Message]:
    with database.unit_of_work() as session:
        return list(session.scalars(select(Message).where(Message.campaign_id == campaign_id).order_by(Message.to)))


def held(database, account_id: str) -> int:
    with database.unit_of_work() as session:
        return book.balance(session, account_id, now=NOON_NEW_YORK).held


def assert_ledger_clean(database):
    with database.unit_of_work() as session:
        assert verify(session) == []


# --- creation --------------------------------------------------------------------------------------

def test_creation_skips_with_a_reason_and_estimates_the_rest(database):
    account_id = make_account(database, 100)
    with database.unit_of_work() as session:
        opt_out(session, account_id, BO, FROM_STOP_KEYWORD)
        opt_out(session, account_id, CY, FROM_API)
    csv = f"to,name\n{ANN},Ann\n{BO},Bo\n{CY},Cy\n{ANN},Ann again\nnot a number,X\n"
    campaign_id, estimate = create(database, account_id, csv=csv, recipients=None)
    assert (estimate.sendable, dict(estimate.skipped), estimate.credits_total) == (
        1, {"opted_out": 1, "do_not_contact": 1, "duplicate": 1, "invalid_number": 1}, 1000)
    assert view(database, campaign_id)["skip_reasons"] == dict(estimate.skipped)


@pytest.mark.parametrize("sender", [249745, ["+14155550199"], {"phone": "+14155550199"}])
def test_a_sender_that_is_not_text_is_refused_naming_from(database, sender):
    account_id = make_account(database, 100)

    with pytest.raises(ValidationFailed) as refused:
        create_campaign(database, account_id, CampaignRequest(
            name="Spring open house", from_=sender, body="Hi", recipients=[{"to": ANN, "fields": {}}]),
            rate_card=CARD, now=NOON_NEW_YORK, cap=UNCAPPED)

    assert "from" in refused.value.errors


def test_a_campaign_whose_send_time_is_long_past_is_refused_rather_than_sent_at_once(database):
    # given an account; when a campaign is created to go out at a time two days past (a wrong month)
    account_id = make_account(database, 100)
    with pytest.raises(ValidationFailed) as refused:
        create(database, account_id, send_at=(NOON_NEW_YORK - timedelta(days=2)).isoformat())

    # then it is refused naming send_at; an hour past goes now
    assert refused.value.errors == {"send_at": "is more than a day past: leave it out to send now"}
    campaign_id, _ = create(database, account_id, send_at=(NOON_NEW_YORK - timedelta(hours=1)).isoformat())
    assert view(database, campaign_id)["status"] == "running"


def test_a_step_or_recipient_naming_a_field_it_does_not_take_is_refused_naming_it(database):
    # given an account; when a drip step says delay_hours (there is none) and a recipient puts a field beside `to`
    account_id = make_account(database, 100)
    with pytest.raises(ValidationFailed) as step:
        create(database, account_id, steps=[{"delay_days": 1, "body": "again", "delay_hours": 3}])
    with pytest.raises(ValidationFailed) as recipient:
        create(database, account_id, recipients=[{"to": ANN, "name": "Ann"}])

    # then each is refused naming the field, and no campaign is stored
    assert "steps[0].delay_hours" in step.value.errors
    assert set(recipient.value.errors) == {"recipients[0].name"}
    with database.unit_of_work() as session:
        assert session.query(Campaign).count() == 0


def test_an_unknown_field_is_refused_at_creation_naming_the_line_and_the_field(database):
    account_id = make_account(database, 100)
    with pytest.raises(ValidationFailed) as refused:
        create(database, account_id, body="Hi {{ name }}\nSee you {{ date }}")
    assert "line 2" in refused.value.errors["body"] and "'date'" in refused.value.errors["body"]


def test_a_recipient_missing_a_field_another_has_is_refused_naming_it(database):
    account_id = make_account(database, 100)
    with pytest.raises(ValidationFailed) as refused:
        create(database, account_id, recipients=[{"to": ANN, "fields": {"name": "Ann"}}, {"to": BO}])
    assert "recipients[1]" in refused.value.errors["body"]


def test_a_creation_that_died_half_way_sends_nothing_and_its_retry_finishes_the_same_campaign(database, monkeypatch):
    monkeypatch.setattr(creation, "RECIPIENT_CHUNK", 2)
    account_id = make_account(database, 100)
    recipients = [{"to": f"+1212555{index:04d}", "fields": {"name": "x"}} for index in range(200, 205)]
    write_chunk = creation._write_recipients
    chunks_written = []

    def dies_on_the_second_chunk(session, *args):
        if chunks_written:
            raise ConnectionError("the web process died")
        chunks_written.append(write_chunk(session, *args))

    with monkeypatch.context() as crash:
        crash.setattr(creation, "_write_recipients", dies_on_the_second_chunk)
        with pytest.raises(ConnectionError):
            create(database, account_id, recipients=recipients, campaign_id="cmp_retried")
    assert view(database, "cmp_retried")["status"] == "creating"
    assert positions(database, "cmp_retried") == [0, 1]
    with database.unit_of_work() as session:
        assert fan_out.due_steps(session, NOON_NEW_YORK + timedelta(days=400)) == []
        assert fan_out.start_step(session, "cmp_retried", 0, now=NOON_NEW_YORK) is None
        with pytest.raises(Conflict):
            resume_campaign(session, "cmp_retried", account_id=account_id, now=NOON_NEW_YORK)

    campaign_id, estimate = create(database, account_id, recipients=recipients, campaign_id="cmp_retried")

    assert (campaign_id, estimate.sendable) == ("cmp_retried", 5)
    assert view(database, campaign_id)["status"] == "running"
    assert positions(database, campaign_id) == [0, 1, 2, 3, 4]
    assert len(fan_out_step(database, campaign_id)) == 5
    again, _ = create(database, account_id, recipients=recipients, campaign_id="cmp_retried")
    assert (again, positions(database, campaign_id), len(messages_of(database, campaign_id))) == (
        "cmp_retried", [0, 1, 2, 3, 4], 5)


def positions(database, campaign_id: str) -> list[int]:
    with database.read_only() as session:
        return list(session.scalars(select(CampaignRecipient.position).where(
            CampaignRecipient.campaign_id == campaign_id).order_by(CampaignRecipient.position)))


# --- fan-out and sending ---------------------------------------------------------------------------

def test_a_campaign_is_rendered_sent_and_charged_through_the_send_path(database, gateways, throttle,  # noqa: F811
                                                                       simulator):  # noqa: F811
    account_id = make_account(database, 100)
    campaign_id, _ = create(database, account_id)
    ids = fan_out_step(database, campaign_id)
    assert len(ids) == 2
    for message_id in ids + ids:  # at-least-once: every job twice
        send(database, message_id, gateways, throttle)
    assert sorted(m["body"] for m in simulator.sent()["messages"]) == ["Hi Ann", "Hi Bo"]
    for message_id in ids:
        deliver(database, message_id)
    counts = view(database, campaign_id)["counts"]
    assert (counts["delivered"], counts["queued"], view(database, campaign_id)["credits_charged"]) == (2, 0, "2")
    assert held(database, account_id) == 0
    assert_ledger_clean(database)


def test_a_chunk_takes_one_hold_on_the_account_row(database, monkeypatch):
    monkeypatch.setattr(fan_out, "CHUNK_SIZE", 3)
    account_id = make_account(database, 100)
    recipients = [{"to": f"+1212555{index:04d}", "fields": {"name": "x"}} for index in range(200, 207)]
    campaign_id, _ = create(database, account_id, recipients=recipients)
    account_updates = []

    def count(conn, cursor, statement, *args):
        if statement.lstrip().upper().startswith("UPDATE ACCOUNTS"):
            account_updates.append(statement)

    event.listen(database.engine, "before_cursor_execute", count)
    try:
        fan_out_step(database, campaign_id)
    finally:
        event.remove(database.engine, "before_cursor_execute", count)
    assert len(account_updates) == 3  # 7 recipients in chunks of 3: three reservations, not seven
    assert held(database, account_id) == 7000
    with database.unit_of_work() as session:
        assert session.scalar(select(func.count()).select_from(Hold).where(Hold.status == "pending")) == 7
    assert_ledger_clean(database)


def test_a_replayed_chunk_makes_nothing_twice(database):
    account_id = make_account(database, 100)
    campaign_id, _ = create(database, account_id)
    first = fan_out_step(database, campaign_id)
    with database.unit_of_work() as session:
        again = fan_out.fan_out_chunk(session, campaign_id, 0, 0, rate_card=CARD, hold_ttl_seconds=900,
                                      now=NOON_NEW_YORK)
    assert (len(first), again, len(messages_of(database, campaign_id))) == (2, [], 2)
    assert held(database, account_id) == 2000


def test_quiet_hours_hold_messages_until_eight_local_then_send_them(database, gateways, throttle,  # noqa: F811
                                                                    simulator):  # noqa: F811
    account_id = make_account(database, 100)
    campaign_id, _ = create(database, account_id, at=NIGHT_NEW_YORK)
    assert fan_out_step(database, campaign_id, at=NIGHT_NEW_YORK) == []  # nothing is enqueued at 03:00
    eight_am = datetime(2026, 11, 10, 13, 0, tzinfo=UTC)
    assert {(m.status, m.send_at.replace(tzinfo=UTC)) for m in messages_of(database, campaign_id)} == {
        ("scheduled", eight_am)}
    report = sweeper.sweep(database, enqueue=lambda _: None, gateway_for=gateways, rate_card=CARD,
                           now=eight_am - timedelta(minutes=1), stale_after=timedelta(minutes=1))
    assert report.enqueued == []  # 07:59: still waiting
    report = sweeper.sweep(database, enqueue=lambda _: None, gateway_for=gateways, rate_card=CARD,
                           now=eight_am, stale_after=timedelta(minutes=1))
    assert len(report.enqueued) == 2
    assert {send(database, message_id, gateways, throttle, at=eight_am) for message_id in report.enqueued} == {
        "queued"}


def test_each_recipient_of_a_chunk_waits_for_eight_in_its_own_zone(database):
    # given a campaign to two New York numbers and one in Los Angeles, fanned out at 09:00 New York (06:00 there)
    account_id = make_account(database, 100)
    los_angeles = "+13105550101"
    nine_am_new_york = datetime(2026, 11, 10, 14, 0, tzinfo=UTC)
    campaign_id, _ = create(database, account_id, at=nine_am_new_york, recipients=[
        {"to": ANN, "fields": {"name": "Ann"}}, {"to": los_angeles, "fields": {"name": "Lu"}},
        {"to": BO, "fields": {"name": "Bo"}}])

    # when its one chunk fans out
    enqueued = fan_out_step(database, campaign_id, at=nine_am_new_york)

    # then the New York messages go now and the Los Angeles one waits for 08:00 there
    messages = {m.to: m for m in messages_of(database, campaign_id)}
    assert sorted(enqueued) == sorted([messages[ANN].id, messages[BO].id])
    assert [(m.status, m.send_at and m.send_at.replace(tzinfo=UTC)) for m in messages.values()] == [
        ("accepted", None), ("accepted", None), ("scheduled", datetime(2026, 11, 10, 16, 0, tzinfo=UTC))]


def test_a_campaign_held_by_quiet_hours_shows_its_messages_scheduled_until_eight_with_the_credits_held(
        database, gateways, throttle, simulator):  # noqa: F811
    # given a two-recipient campaign fanned out at 03:00 New York: both messages wait for 08:00 there
    account_id = make_account(database, 100)
    campaign_id, _ = create(database, account_id, at=NIGHT_NEW_YORK)
    fan_out_step(database, campaign_id, at=NIGHT_NEW_YORK)
    eight_am = datetime(2026, 11, 10, 13, 0, tzinfo=UTC)

    # then the campaign counts them as scheduled (not queued), says when they go, and shows the credits
    # estimated and held for them, none spent yet
    waiting = view(database, campaign_id)
    assert (waiting["counts"]["scheduled"], waiting["counts"]["queued"]) == (2, 0)
    assert waiting["next_send_at"] == eight_am.isoformat() and waiting["status"] == "running"
    assert (waiting["credits_estimated"], waiting["credits_held"], waiting["credits_charged"]) == ("2", "2", "0")

    # when 08:00 comes and both are sent and delivered
    report = sweeper.sweep(database, enqueue=lambda _: None, gateway_for=gateways, rate_card=CARD,
                           now=eight_am, stale_after=timedelta(minutes=1))
    for message_id in report.enqueued:
        send(database, message_id, gateways, throttle, at=eight_am)
        deliver(database, message_id, at=eight_am)

    # then nothing waits, nothing is held, and the credits spent are the estimate
    done = view(database, campaign_id)
    assert (done["counts"]["scheduled"], done["counts"]["delivered"], done["next_send_at"]) == (0, 2, None)
    assert (done["credits_held"], done["credits_charged"], done["status"]) == ("0", "2", "completed")


def test_a_campaign_without_a_window_of_its_own_waits_for_the_accounts(database):
    # given an account whose texts may go 10:00-20:00 recipient-local, and a campaign created at 09:00 New York
    account_id = make_account(database, 100)
    with database.unit_of_work() as session:
        set_quiet_hours(session, account_id, window=parse_window({"start": "10:00", "end": "20:00"}), scope=None)
    nine_am = datetime(2026, 11, 10, 14, 0, tzinfo=UTC)
    campaign_id, _ = create(database, account_id, at=nine_am)

    # when it fans out at 09:00, then its messages wait for 10:00 there, and the campaign shows the account's window
    assert fan_out_step(database, campaign_id, at=nine_am) == []
    assert {(m.status, m.send_at.replace(tzinfo=UTC)) for m in messages_of(database, campaign_id)} == {
        ("scheduled", datetime(2026, 11, 10, 15, 0, tzinfo=UTC))}
    assert view(database, campaign_id)["quiet_hours"] == {"start": "10:00", "end": "20:00"}


def test_a_message_whose_send_is_delayed_past_the_window_waits_again(database, gateways, throttle,  # noqa: F811
                                                                     simulator):  # noqa: F811
    account_id = make_account(database, 100)
    campaign_id, _ = create(database, account_id)
    message_id = fan_out_step(database, campaign_id)[0]
    late = datetime(2026, 11, 11, 3, 0, tzinfo=UTC)  # 22:00 in New York: the job ran late
    assert send(database, message_id, gateways, throttle, at=late) == "scheduled"
    assert simulator.sent()["messages"] == []
    assert held(database, account_id) == 2000  # the chunk's hold still covers it


def test_an_opt_out_mid_campaign_stops_the_rest_for_that_recipient(database, gateways, throttle,  # noqa: F811
                                                                   simulator):  # noqa: F811
    account_id = make_account(database, 100)
    campaign_id, estimate = create(database, account_id, steps=[{"delay_days": 2, "body": "Still there, {{ name }}?"}])
    assert estimate.messages == 4
    ids = fan_out_step(database, campaign_id)
    with database.unit_of_work() as session:  # Bo replies STOP before his first message leaves
        opt_out(session, account_id, BO, FROM_STOP_KEYWORD)
    outcomes = {m.to: send(database, m.id, gateways, throttle) for m in messages_of(database, campaign_id)}
    assert outcomes == {ANN: "queued", BO: "canceled"}
    assert held(database, account_id) == 1000  # Bo's hold is released; Ann's waits for settlement
    two_days_later = NOON_NEW_YORK + timedelta(days=2)
    assert len(ids) == 2
    with database.unit_of_work() as session:
        assert fan_out.due_steps(session, two_days_later) == [(campaign_id, 1)]
    step_two = fan_out_step(database, campaign_id, 1, at=two_days_later)
    with database.unit_of_work() as session:
        assert [session.get(Message, message_id).to for message_id in step_two] == [ANN]
    assert view(database, campaign_id)["skip_reasons"] == {"opted_out": 1}
    assert_ledger_clean(database)


def test_credits_running_out_mid_campaign_park_the_rest_until_a_top_up(database, gateways, throttle,  # noqa: F811
                                                                       simulator, monkeypatch):  # noqa: F811
    monkeypatch.setattr(fan_out, "CHUNK_SIZE", 2)
    account_id = make_account(database, 5)
    recipients = [{"to": f"+1212555{index:04d}", "fields": {"name": "x"}} for index in range(300, 304)]
    campaign_id, estimate = create(database, account_id, recipients=recipients)  # 4 credits: it fits when accepted
    with database.unit_of_work() as session:  # then a number fee leaves 3 before it fans out
        book.charge_pool(session, account_id, 2000, kind="month_end_charge", idempotency_key="fee",
                         now=NOON_NEW_YORK)
    ids = fan_out_step(database, campaign_id)
    assert (len(ids), view(database, campaign_id)["counts"]["parked"]) == (2, 2)  # the second chunk did not fit
    for message_id in ids:
        send(database, message_id, gateways, throttle)
        deliver(database, message_id)
    with database.unit_of_work() as session:
        assert book.balance(session, account_id, now=NOON_NEW_YORK).balance == 1000  # never below zero
        book.grant(session, account_id, 5000, "purchase", granted_at=NOON_NEW_YORK, idempotency_key="top-up")
    report = sweeper.sweep(database, enqueue=lambda _: None, gateway_for=gateways, rate_card=CARD,
                           now=NOON_NEW_YORK, stale_after=timedelta(minutes=1))
    assert len(report.unparked) == 2
    for message_id in report.unparked:
        assert send(database, message_id, gateways, throttle) == "queued"
        deliver(database, message_id)
    assert view(database, campaign_id)["counts"]["delivered"] == 4
    assert_ledger_clean(database)


# --- steering --------------------------------------------------------------------------------------

def test_pause_holds_everything_back_and_resume_lets_it_go(database, gateways, throttle, simulator):  # noqa: F811
    account_id = make_account(database, 100)
    campaign_id, _ = create(database, account_id)
    ids = fan_out_step(database, campaign_id)
    with database.unit_of_work() as session:
        pause_campaign(session, campaign_id, account_id=account_id, now=NOON_NEW_YORK)
    assert {send(database, message_id, gateways, throttle) for message_id in ids} == {"skipped"}
    assert view(database, campaign_id)["status"] == "paused"
    with database.unit_of_work() as session:
        _, resumed = resume_campaign(session, campaign_id, account_id=account_id, now=NOON_NEW_YORK)
    assert sorted(resumed) == sorted(ids)
    assert {send(database, message_id, gateways, throttle) for message_id in resumed} == {"queued"}


def test_cancel_releases_the_holds_of_everything_not_sent(database, gateways, throttle, simulator):  # noqa: F811
    account_id = make_account(database, 100)
    campaign_id, _ = create(database, account_id, steps=[{"delay_days": 1, "body": "Again {{ name }}"}])
    ids = fan_out_step(database, campaign_id)
    send(database, ids[0], gateways, throttle)
    with database.unit_of_work() as session:
        cancel_campaign(session, campaign_id, account_id=account_id, now=NOON_NEW_YORK)
    assert send(database, ids[1], gateways, throttle) == "skipped"
    assert held(database, account_id) == 1000  # only the message already at Twilio
    assert view(database, campaign_id)["counts"]["canceled"] == 1
    with database.unit_of_work() as session:
        assert fan_out.due_steps(session, NOON_NEW_YORK + timedelta(days=2)) == []
    assert_ledger_clean(database)


def test_a_step_claimed_whose_chunk_job_was_lost_ends_canceled_with_its_campaign(database):
    # given a campaign whose step was claimed but whose one chunk job was lost
    account_id = make_account(database, 100)
    campaign_id, _ = create(database, account_id)
    with database.unit_of_work() as session:
        fan_out.start_step(session, campaign_id, 0, now=NOON_NEW_YORK)

    # when the campaign is canceled, and the lost chunk's job comes back late
    with database.unit_of_work() as session:
        cancel_campaign(session, campaign_id, account_id=account_id, now=NOON_NEW_YORK)
    with database.unit_of_work() as session:
        late = fan_out.fan_out_chunk(session, campaign_id, 0, 0, rate_card=CARD, hold_ttl_seconds=900,
                                     now=NOON_NEW_YORK)

    # then the step is canceled, not left fanning out, and nothing was made or held
    assert late == []
    assert [step["status"] for step in view(database, campaign_id)["steps"]] == ["canceled"]
    assert messages_of(database, campaign_id) == [] and held(database, account_id) == 0
