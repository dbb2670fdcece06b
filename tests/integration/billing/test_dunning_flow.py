"""creditq's own dunning of its accounts end to end with the simulated gateway and the in-process Twilio simulator:
the built-in schedule, texted from the built-in site."""

from datetime import UTC, datetime, timedelta
from functools import partial

import pytest
from sqlalchemy import select

from shared.billing import auto_recharge, dunning, dunning_texts, payment_links
from shared.billing.dunning_texts import DunningTexter
from shared.billing.payments import SimulatedGateway
from shared.config import load_settings
from shared.email import FileOutbox
from shared.ids import new_id
from shared.messaging.opt_outs import opt_out
from shared.models import Account, DunningIntegration, DunningRun, User
from shared.twilio.gateway import gateway_for
from tests.twilio_sim_fixtures import (  # noqa: F401  (fixtures)
    _callback_receiver_server,
    _simulator_server,
    background_loop,
    callback_receiver,
    simulator,
)
from tests.unit.billing.test_purchases import new_account

NOW = datetime(2026, 11, 3, 12, 0, tzinfo=UTC)
OWNER_PHONE = "+14155550100"
SITE_FROM = "+15005550006"
BASE = "https://app.example.com"


@pytest.fixture
def world(sqlite_database, simulator, tmp_path):  # noqa: F811
    settings = load_settings({"CREDITQ_DATA_DIR": str(tmp_path / "data"), "TWILIO_API_BASE": simulator.url,
                              "CREDITQ_ADMIN_KEY": "test-operator-key-0123456789"})
    simulator.reset()
    return dict(database=sqlite_database, simulator=simulator, gateway=SimulatedGateway(),
                outbox=FileOutbox(tmp_path / "outbox"), texter=DunningTexter(partial(gateway_for, settings)),
                gateway_for=partial(gateway_for, settings))


def customer(world, card="pm_card_chargeDeclined", steps=None) -> tuple[str, str]:
    """An account whose owner has a mobile number, a card on file that declines, and an unpaid bill; `steps`: the
    schedule the account set for its own customers (creditq's own dunning of it does not use it)."""
    database = world["database"]
    account_id = new_account(database)
    with database.unit_of_work() as session:
        session.add(User(id=new_id("usr"), account_id=account_id, name="Dana Whitfield", email="dana@example.com",
                         phone=OWNER_PHONE, role="owner"))
        auto_recharge.configure(session, account_id, enabled=False, threshold_mc=0, credits_mc=100_000,
                                payment_method=card, now=NOW)
        if steps is not None:
            dunning.set_schedule(session, account_id, steps=steps, final_action="suspend", now=NOW)
        if session.scalar(select(DunningIntegration).where(DunningIntegration.site == "default")) is None:
            sim = world["simulator"]
            dunning_texts.set_integration(session, "default", account_sid=sim.account_sid, auth_token=sim.auth_token,
                                        from_number=SITE_FROM, now=NOW)
        run = dunning.start_dunning(session, account_id, reason="month_end", amount_cents=1234,
                                    reference="invoice-2026-10", now=NOW)
        return account_id, run.id


def step(world, run_id, number, at=NOW):
    return dunning.run_step(world["database"], gateway=world["gateway"], email_sender=world["outbox"],
                            texter=world["texter"], public_base_url=BASE, run_id=run_id, step=number, now=at)


def texts(world) -> list[str]:
    return [m["body"] for m in world["simulator"].sent()["messages"] if m["to"] == OWNER_PHONE]


def run_of(world, run_id) -> DunningRun:
    with world["database"].unit_of_work() as session:
        return session.get(DunningRun, run_id)


def account_of(world, account_id) -> Account:
    with world["database"].unit_of_work() as session:
        return session.get(Account, account_id)


def test_decline_then_recovery_when_the_card_is_updated(world):
    # given a declined month-end bill
    account_id, run_id = customer(world)

    # when the first step runs
    outcome = step(world, run_id, 0)

    # then the retry is declined, and the owner gets an email and one text with the amount and the link
    assert (outcome.status, outcome.payment_status) == ("advanced", "declined")
    [text] = texts(world)
    prefix, suffix = "creditq: payment of $12.34 failed. Update your card: ", " Reply HELP for help, STOP to opt out."
    assert text.startswith(prefix) and text.endswith(suffix)
    link = text[len(prefix):-len(suffix)]  # signed for this account, not made from its id alone
    assert link.startswith(f"{BASE}{payment_links.PATH}")
    assert payment_links.account_of(link.rsplit("/", 1)[1], now=NOW) == account_id
    assert payment_links.account_of(f"{account_id}.zzzzzz.forged", now=NOW) is None
    [email] = world["outbox"].messages()
    assert email["To"] == "dana@example.com" and "Hi Dana Whitfield" in email.get_content()

    # when the customer saves a working card and the unpaid amount is retried
    with world["database"].unit_of_work() as session:
        auto_recharge.configure(session, account_id, enabled=False, threshold_mc=0, credits_mc=100_000,
                                payment_method="pm_card_visa", now=NOW)
    payment = dunning.retry_payment(world["database"], world["gateway"], run_id, now=NOW + timedelta(hours=1))

    # then the run is over and the next step does nothing
    assert payment.status == "succeeded" and [c.amount_cents for c in world["gateway"].charges(status="succeeded")] == [1234]
    assert run_of(world, run_id).status == "recovered"
    assert step(world, run_id, 1, NOW + timedelta(days=3)).status == "skipped"
    assert len(texts(world)) == 1


def test_a_step_that_succeeds_ends_the_run_without_reminders(world):
    account_id, run_id = customer(world, card="pm_card_visa")
    assert step(world, run_id, 0).status == "recovered"
    assert texts(world) == [] and world["outbox"].messages() == []


def test_decline_through_every_built_in_step_suspends_the_account_until_paid_whatever_its_customers_schedule(world):
    # given an account whose own customers' schedule says something else entirely
    steps = [{"day": 0, "sms": {"body": "Hi {{ customer.name }}, pay Acme Gym. HELP for help, STOP to end."}}]
    account_id, run_id = customer(world, steps=steps)

    # when creditq's own run goes through its built-in days 0, 3 and 7 unpaid
    assert step(world, run_id, 0).status == "advanced"
    assert run_of(world, run_id).next_step_at.replace(tzinfo=UTC) == NOW + timedelta(days=3)
    assert step(world, run_id, 1, NOW + timedelta(days=3)).status == "advanced"
    assert step(world, run_id, 2, NOW + timedelta(days=7)).status == "exhausted"

    # then the owner got creditq's texts, never the account's customer texts, and the account is suspended
    sent = texts(world)
    assert [text.split(":")[0] for text in sent] == ["creditq"] * 3 and "$12.34" in sent[2]
    account = account_of(world, account_id)
    assert account.status == "suspended" and account.status_reason.startswith("dunning: $12.34 unpaid")

    # paying later lifts the suspension
    with world["database"].unit_of_work() as session:
        dunning.payment_method_updated(session, account_id, "pm_card_visa", now=NOW)
    dunning.retry_payment(world["database"], world["gateway"], run_id, now=NOW + timedelta(days=3))
    assert account_of(world, account_id).status == "active"


def test_an_opted_out_owner_gets_email_only(world):
    account_id, run_id = customer(world)
    with world["database"].unit_of_work() as session:
        opt_out(session, account_id, OWNER_PHONE, "api")

    outcome = step(world, run_id, 0)

    assert outcome.sms_status == "skipped: the owner opted out of texts"
    assert texts(world) == [] and len(world["outbox"].messages()) == 1


def test_rejected_credentials_stop_texts_until_new_ones_are_saved(world):
    account_id, run_id = customer(world)
    sim = world["simulator"]
    sim.configure(auth_token="rotated-token")  # the site's saved token is now wrong: 20003

    first = step(world, run_id, 0)
    with world["database"].unit_of_work() as session:
        broken = dunning_texts.get_integration(session, "default")  # the built-in site
    assert first.sms_status.startswith("failed: Twilio rejected") and first.email_status == "sent to dana@example.com"
    assert broken.status == "broken" and "20003" in broken.broken_reason

    second = step(world, run_id, 1, NOW + timedelta(days=3))
    assert second.sms_status.startswith("skipped: the site's Twilio integration is broken")
    assert second.email_status == "sent to dana@example.com" and texts(world) == []

    with world["database"].unit_of_work() as session:
        dunning_texts.set_integration(session, "default", account_sid=sim.account_sid, auth_token="rotated-token",
                                    from_number=SITE_FROM, now=NOW)
    third = step(world, run_id, 2, NOW + timedelta(days=7))
    assert third.sms_status == f"sent to {OWNER_PHONE}" and len(texts(world)) == 1


def test_a_token_saved_again_while_its_text_fails_is_told_apart_by_version_and_stays_ok(world):
    # given a site whose saved token Twilio now rejects
    account_id, run_id = customer(world)
    sim, database = world["simulator"], world["database"]
    sim.configure(auth_token="rotated-token")

    # and the operator saving the very same token again while a text is on its way (a new version)
    def save_again_then_send(sid, token):
        with database.unit_of_work() as session:
            dunning_texts.set_integration(session, "default", account_sid=sid, auth_token=token,
                                          from_number=SITE_FROM, now=NOW)
        return world["gateway_for"](sid, token)

    world["texter"] = DunningTexter(save_again_then_send)

    # when the text fails with 20003
    outcome = step(world, run_id, 0)

    # then only the version it was sent with counts as broken: the save that landed meanwhile stays ok
    with database.unit_of_work() as session:
        integration = session.scalar(select(DunningIntegration).where(DunningIntegration.site == "default"))
    assert outcome.sms_status.startswith("failed: Twilio rejected")
    assert integration.status == "ok" and integration.broken_reason is None
    assert integration.credential_version == 2


def test_risky_texts_are_saved_with_warnings(sqlite_database):
    account_id = new_account(sqlite_database)
    with sqlite_database.unit_of_work() as session:
        view = dunning.set_schedule(session, account_id, now=NOW, steps=[
            {"day": 0, "sms": {"body": "Pay {{ amount_due }} now"}},
            {"day": 1, "sms": {"body": "Pay {{ amount_due }}. " + "x" * 200 + " HELP for help, STOP to end."}}])
    assert len(view.steps) == 2
    assert view.warnings == ["steps[0].sms.body lacks STOP and HELP wording (e.g. \"Reply HELP for help, STOP to opt out.\")",
                             "steps[1].sms.body renders to 2 segments (GSM-7, 243 characters) for a sample "
                             "customer; keep it to one"]
