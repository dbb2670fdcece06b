"""A customer's dunning text through the send pipeline, against the in-process Twilio simulator, on SQLite and
PostgreSQL: automated (quiet hours apply), from the site's number with the site's credentials, made once."""

from datetime import UTC, datetime, timedelta

from sqlalchemy import select

from shared.billing import dunning, dunning_texts
from shared.billing.dunning_texts import DunningTexter
from shared.billing.payments import SimulatedGateway
from shared.email import FileOutbox
from shared.messaging.sites import opt_out_of_site
from shared.models import Account, DunningIntegration, DunningRun, Message
from tests.integration.messaging.test_send_pipeline import (  # noqa: F401  (fixtures)
    CARD,
    LATE_EVENING_IN_SAN_FRANCISCO,
    NEXT_MORNING_IN_SAN_FRANCISCO,
    UNCAPPED,
    gateways,
    make_account,
    send,
    throttle,
)
from tests.twilio_sim_fixtures import (  # noqa: F401  (fixtures)
    _callback_receiver_server,
    _simulator_server,
    background_loop,
    callback_receiver,
    simulator,
)

SITE_NUMBER = "+14155550177"
CUSTOMER = {"id": "cus_1", "name": "Dana", "phone": "+14155550100", "fields": {"plan": "Gold"}}
BODY = "{{ customer.name }}, {{ amount_due }} for {{ customer.fields.plan }} is due. Reply HELP for help, STOP to end."


LATER_EMAIL = {"day": 3, "email": {"subject": "Due", "body": "{{ update_url }}"}}


def customer_run(database, simulator, *, first_step: dict | None = None,  # noqa: F811
                 customer: dict = CUSTOMER) -> tuple[str, str]:
    """An account with credits, a site on the simulator's account, a schedule (`first_step`, by default a text, then
    an e-mail) and a run for `customer`: (account, run)."""
    account_id = make_account(database, 10, sender=SITE_NUMBER)
    with database.unit_of_work() as session:
        dunning_texts.set_integration(session, "downtown", account_id=account_id, account_sid=simulator.account_sid,
                                      auth_token=simulator.auth_token, from_number=SITE_NUMBER,
                                      now=datetime.now(UTC))
        dunning.set_schedule(session, account_id, now=datetime.now(UTC), steps=[
            first_step or {"day": 0, "sms": {"body": BODY}}, LATER_EMAIL])
        run = dunning.open_customer_run(session, account_id, site="downtown", customer=customer, amount_due="49.90",
                                        currency="USD", update_url="https://pay.example.com/u/1",
                                        now=datetime.now(UTC) - timedelta(minutes=1))
        return account_id, run.id


def run_step(database, run_id: str, enqueued: list[str], tmp_path):
    return dunning.run_step(database, gateway=SimulatedGateway(), email_sender=FileOutbox(tmp_path / "outbox"),
                            texter=DunningTexter(lambda sid, token: None),
                            pipeline=dunning.Pipeline(CARD, UNCAPPED, enqueued.append),
                            public_base_url="https://app.example.com", run_id=run_id, step=0, now=datetime.now(UTC))


def test_a_step_makes_its_text_once_and_it_waits_for_the_morning_like_any_automated_text(
        database, gateways, throttle, simulator, tmp_path):  # noqa: F811
    # given a customer's run
    account_id, run_id = customer_run(database, simulator)

    # when its step runs, and runs again as if the worker had died before the run moved on
    enqueued: list[str] = []
    outcome = run_step(database, run_id, enqueued, tmp_path)
    with database.unit_of_work() as session:
        session.get(DunningRun, run_id).next_step = 0
    run_step(database, run_id, enqueued, tmp_path)

    # then one message of the account exists, from the site's number, rendered for the customer, enqueued again
    with database.unit_of_work() as session:
        [text] = session.scalars(select(Message).where(Message.account_id == account_id)).all()
        site_id = session.scalar(select(DunningIntegration.id).where(DunningIntegration.account_id == account_id))
    assert outcome.sms_status == f"accepted: {text.id}" and enqueued == [text.id, text.id]
    assert (text.from_, text.to, text.dunning_site_id) == (SITE_NUMBER, CUSTOMER["phone"], site_id)
    assert text.body == "Dana, $49.90 for Gold is due. Reply HELP for help, STOP to end."

    # when its send job runs at 21:30 at the customer's
    status = send(database, text.id, gateways, throttle, now=lambda: LATE_EVENING_IN_SAN_FRANCISCO)

    # then it waits for 08:00 there, as automated texts do, with nothing sent
    with database.unit_of_work() as session:
        waiting = session.get(Message, text.id)
    assert (status, waiting.send_at.replace(tzinfo=UTC)) == ("scheduled", NEXT_MORNING_IN_SAN_FRANCISCO)
    assert simulator.sent()["messages"] == []


def test_a_customer_who_said_stop_to_the_site_is_not_texted_and_a_rejected_site_stops_only_itself(
        database, gateways, throttle, simulator, tmp_path):  # noqa: F811
    # given two runs of one account: one customer said STOP to the site, the other did not
    account_id, stopped_run = customer_run(database, simulator)
    with database.unit_of_work() as session:
        opt_out_of_site(session, session.scalar(select(DunningIntegration.id)), CUSTOMER["phone"],
                        now=datetime.now(UTC))
        other = dunning.open_customer_run(session, account_id, site="downtown",
                                          customer={**CUSTOMER, "id": "cus_2", "phone": "+14155550101"},
                                          amount_due="10", currency="USD", update_url="https://pay.example.com/u/2",
                                          now=datetime.now(UTC) - timedelta(minutes=1)).id
    enqueued: list[str] = []

    # when both steps run, and the site's token was regenerated at Twilio before the other's text goes
    assert run_step(database, stopped_run, enqueued, tmp_path).sms_status == \
        "skipped: the customer texted STOP to this site"
    run_step(database, other, enqueued, tmp_path)
    simulator.configure(auth_token="regenerated")
    [message_id] = enqueued
    status = send(database, message_id, gateways, throttle, now=lambda: NEXT_MORNING_IN_SAN_FRANCISCO)

    # then the text fails uncharged, the site is broken, and the account itself is not blocked
    with database.unit_of_work() as session:
        failed = session.get(Message, message_id)
        site = session.scalar(select(DunningIntegration))
        account = session.get(Account, account_id)
    assert (status, failed.error_code, failed.credits_charged) == ("failed", 20003, 0)
    assert site.status == "broken" and "20003" in site.broken_reason
    assert account.sending_blocked_reason is None and account.held == 0


def test_a_customer_whose_phone_has_an_extension_gets_no_text_at_the_line(database, simulator, tmp_path):  # noqa: F811
    # given a customer's run whose phone, from the billing system, is an office line with an extension
    account_id, _ = customer_run(database, simulator)
    with database.unit_of_work() as session:
        dunning.end_customer_run(session, account_id, session.scalar(select(DunningRun.id)), "resolved",
                                 now=datetime.now(UTC))
        run = dunning.open_customer_run(session, account_id, site="downtown", currency="USD", amount_due="49.90",
                                        customer={**CUSTOMER, "phone": "+1 415 555 0100 x22", "email": "d@example.com"},
                                        update_url="https://pay.example.com/u/1", now=datetime.now(UTC))
        run_id, kept = run.id, (run.customer["phone"], run.customer["phone_extension"])

    # when its step with a text runs
    enqueued: list[str] = []
    outcome = run_step(database, run_id, enqueued, tmp_path)

    # then the line is kept apart from its extension, and no text was made for whoever answers the line
    assert kept == ("+14155550100", "22")
    assert outcome.sms_status.startswith("skipped: the customer's phone has an extension (22)") and enqueued == []
    with database.unit_of_work() as session:
        assert session.scalars(select(Message).where(Message.account_id == account_id)).all() == []


def test_a_step_whose_templates_pass_a_limit_on_one_customers_data_is_recorded_and_the_run_goes_on(
        database, simulator, tmp_path):  # noqa: F811
    # given a schedule whose first step texts and e-mails a customer's field, checked on a short sample when saved,
    # and a customer whose field is longer than a template may write (25,000 characters)
    invoice = "{{ customer.fields.invoice | upcase }} Reply HELP for help, STOP to end."
    _, run_id = customer_run(
        database, simulator,
        first_step={"day": 0, "sms": {"body": invoice},
                    "email": {"subject": "Due", "body": "{{ customer.fields.invoice }}"}},
        customer={**CUSTOMER, "email": "d@example.com", "fields": {"invoice": "x" * 25_000}})

    # when its first step runs, twice (a job delivered again)
    enqueued: list[str] = []
    outcomes = [run_step(database, run_id, enqueued, tmp_path) for _ in range(2)]

    # then the text and the e-mail are recorded as not sent, saying why, nothing was sent, and the run moved on:
    # the job delivered again finds the step done
    first, again = outcomes
    assert first.email_status.startswith("not sent: the template cannot be rendered for this customer")
    assert first.sms_status.startswith("not sent: the template cannot be rendered for this customer")
    assert again.status == "skipped"
    assert enqueued == [] and not list((tmp_path / "outbox").glob("*"))
    with database.unit_of_work() as session:
        assert session.get(DunningRun, run_id).next_step == 1
