"""Each change writes its event in its own transaction, on SQLite (Python ledger) and PostgreSQL (the ledger
functions): a message's life through the real send, callback and settle steps against the Twilio simulator;
a lock and its unlock; a payment; a low balance; a campaign found completed; the month's expiring credits."""

from datetime import UTC, datetime

import pytest
from sqlalchemy import select

from shared.billing.expiring_notices import note_expiring
from shared.billing.low_balance import note_settlement
from shared.billing.payments import SimulatedGateway
from shared.billing.purchases import PaymentDeclined, purchase
from shared.campaigns.completion import complete_finished
from shared.events.endpoints import create_endpoint
from shared.ledger import book
from shared.messaging.rates import default_rate_card
from shared.messaging.settlement import settle_message
from shared.models import Account, Campaign, CampaignStep, Message, WebhookEvent
from tests.integration.messaging.test_send_pipeline import (  # noqa: F401  (fixtures)
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


def now() -> datetime:
    return datetime.now(UTC)


def subscribed(database, account_id: str, events=("*",)) -> None:
    with database.unit_of_work() as session:
        create_endpoint(session, account_id, url="https://hooks.example.com/creditq", events=list(events),
                        description=None, now=now())


def events_of(database, account_id: str) -> list[WebhookEvent]:
    with database.unit_of_work() as session:
        return list(session.scalars(select(WebhookEvent).where(WebhookEvent.account_id == account_id)
                                    .order_by(WebhookEvent.created_at, WebhookEvent.key)))


def test_a_texts_life_writes_sent_then_delivered_once_and_a_failed_one_failed(
        database, gateways, throttle):  # noqa: F811
    # given an account whose endpoint takes every event
    account_id = make_account(database, 10)
    subscribed(database, account_id)
    delivered, failed = accept(database, account_id, body="delivered"), accept(database, account_id, body="failed")
    # when both are sent, one is reported delivered (twice: Twilio repeats itself), the other undelivered
    for message_id in (delivered, failed):
        assert send(database, message_id, gateways, throttle) in ("queued", "sent")
    report(database, delivered, "delivered")
    report(database, delivered, "delivered")
    report(database, failed, "undelivered")
    settle(database, delivered)
    # then each message has its message.sent, and one final event each
    written = sorted((event.type, event.data["id"]) for event in events_of(database, account_id))
    assert written == sorted([("message.sent", delivered), ("message.sent", failed),
                              ("message.delivered", delivered), ("message.failed", failed)])
    final = next(event for event in events_of(database, account_id) if event.type == "message.delivered")
    assert (final.data["status"], final.data["body"], final.data["account_id"]) == ("delivered", "delivered",
                                                                                    account_id)


def test_an_account_without_endpoints_gets_no_events_along_the_same_path(database, gateways, throttle):  # noqa: F811
    account_id = make_account(database, 10)
    message_id = accept(database, account_id)
    send(database, message_id, gateways, throttle)
    report(database, message_id, "delivered")
    settle(database, message_id)
    assert events_of(database, account_id) == []


def test_settling_past_zero_locks_once_and_a_purchase_unlocks(database, gateways, throttle):  # noqa: F811
    account_id = make_account(database, 3)
    subscribed(database, account_id, ["account.locked", "account.unlocked"])
    ids = [accept(database, account_id) for _ in range(3)]
    for message_id in ids:
        send(database, message_id, gateways, throttle)
    for message_id in ids:  # each costs 2 credits against a 1-credit hold: the account goes below zero
        report(database, message_id, "delivered", segments=2)
        settle(database, message_id)
    with database.unit_of_work() as session:
        assert session.get(Account, account_id).status == "locked"
        book.grant(session, account_id, 10_000, "purchase", granted_at=now(), idempotency_key="top-up")
    written = [(event.type, event.data["balance"]) for event in events_of(database, account_id)]
    assert [kind for kind, _ in written] == ["account.locked", "account.unlocked"]  # locked once, not per settle
    assert written[1] == ("account.unlocked", "7")


def test_a_payment_writes_succeeded_or_failed(database):
    account_id = make_account(database, 0)
    subscribed(database, account_id, ["payment.succeeded", "payment.failed"])
    paid = purchase(database, SimulatedGateway(), account_id, 100_000, "pm_card_visa", idempotency_key="a", now=now())
    with pytest.raises(PaymentDeclined):
        purchase(database, SimulatedGateway(), account_id, 100_000, "pm_card_chargeDeclined", idempotency_key="b",
                 now=now())
    written = {event.type: event.data for event in events_of(database, account_id)}
    assert written["payment.succeeded"]["id"] == paid.id and written["payment.succeeded"]["credits"] == "100"
    assert (written["payment.failed"]["status"], written["payment.failed"]["decline_code"]) == (
        "declined", "generic_decline")


def test_a_settlement_under_the_threshold_writes_balance_low_once_a_day(database, gateways, throttle):  # noqa: F811
    account_id = make_account(database, 3)
    subscribed(database, account_id, ["balance.low"])
    with database.unit_of_work() as session:
        session.get(Account, account_id).low_balance_threshold = 2_500
    for message_id in [accept(database, account_id) for _ in range(2)]:
        send(database, message_id, gateways, throttle)
        report(database, message_id, "delivered")
        with database.unit_of_work() as session:  # as the settle job does: the charge and its notices together
            settle_message(session, message_id, rate_card=default_rate_card(), now=now())
            note_settlement(session, message_id, now=now())
    [event] = events_of(database, account_id)
    assert (event.type, event.data["wallet"], event.data["available"], event.data["threshold"]) == (
        "balance.low", "pool", "2", "2.5")


def test_a_running_campaign_with_nothing_waiting_is_stamped_completed_once(database):
    account_id = make_account(database, 10)
    subscribed(database, account_id, ["campaign.completed"])
    at = now()
    with database.unit_of_work() as session:
        for campaign_id, waiting in (("cmp_done", "delivered"), ("cmp_busy", "queued")):
            session.add(Campaign(id=campaign_id, account_id=account_id, name=campaign_id, from_="+14155550000",
                                 status="running", recipients=1, send_at=at, created_at=at, updated_at=at))
            session.flush()
            session.add(CampaignStep(campaign_id=campaign_id, step=0, body="hi", status="done", starts_at=at))
            session.add(Message(id=f"msg_{campaign_id}", account_id=account_id, campaign_id=campaign_id, to="+1415555",
                                from_="+14155550000", body="hi", status=waiting, created_at=at, updated_at=at))
    with database.unit_of_work() as session:
        assert complete_finished(session, now=at) == ["cmp_done"]
    with database.unit_of_work() as session:
        assert complete_finished(session, now=at) == []
        assert session.get(Campaign, "cmp_done").completed_at is not None
    [event] = events_of(database, account_id)
    assert (event.type, event.data["id"], event.data["status"], event.data["counts"]["delivered"]) == (
        "campaign.completed", "cmp_done", "completed", 1)


def test_the_months_expiring_credits_are_told_once_in_its_last_week(database):
    account_id = make_account(database, 0)
    subscribed(database, account_id, ["credits.expiring"])
    month_end = datetime(2026, 12, 1, tzinfo=UTC)
    with database.unit_of_work() as session:
        book.grant(session, account_id, 40_000, "bonus", granted_at=datetime(2026, 11, 2, tzinfo=UTC),
                   expires_at=month_end, idempotency_key="bonus")
    for day in (datetime(2026, 11, 20, tzinfo=UTC), datetime(2026, 11, 25, tzinfo=UTC),
                datetime(2026, 11, 26, tzinfo=UTC)):
        with database.unit_of_work() as session:
            note_expiring(session, now=day)
    [event] = events_of(database, account_id)
    advice = event.data.pop("advice")  # with the plan advice over the months before (GET .../advice)
    assert event.data == {"account_id": account_id, "period": "2026-11", "credits": "40",
                          "expires_at": month_end.isoformat()}
    assert (advice["account_id"], advice["currency"]) == (account_id, "usd")
    assert {"cycles", "current", "recommended", "saving_cents", "rollover_trend"} <= set(advice)
