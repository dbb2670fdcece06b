"""Canceling an account while its messages move through the send pipeline, against the Twilio simulator."""

from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy import func, select

from creditq.cli import main
from shared.campaigns import fan_out
from shared.ledger import book
from shared.ledger.verify import verify
from shared.lifecycle import account_life
from shared.models import Account, Entry, Hold, Message
from tests.integration.campaigns.test_campaigns import NOON_NEW_YORK, create
from tests.integration.messaging.test_send_pipeline import (  # noqa: F401
    CARD,
    accept,
    account,
    gateways,
    make_account,
    message,
    now,
    report,
    send,
    settle,
    throttle,
    usage_entries,
)
from tests.twilio_sim_fixtures import (  # noqa: F401
    _callback_receiver_server,
    _simulator_server,
    background_loop,
    callback_receiver,
    simulator,
)


def cancel(database, account_id) -> None:
    with database.unit_of_work() as session:
        account_life.cancel_account(session, account_id, actor="operator", now=now())


def lots_by_kind(database, account_id) -> dict[str, int]:
    with database.unit_of_work() as session:
        view = book.balance(session, account_id, now=now())
    totals: dict[str, int] = {}
    for lot in view.lots:
        totals[lot.kind] = totals.get(lot.kind, 0) + lot.remaining
    return totals


@pytest.mark.postgres
def test_a_message_with_twilio_settles_after_the_cancel_a_queued_one_is_canceled_uncharged_and_the_ledger_verifies(
        postgres_database, gateways, throttle, monkeypatch, capsys):  # noqa: F811
    database = postgres_database
    # given 5 plan and 10 purchased credits, a message Twilio has and one still waiting to be sent
    account_id = make_account(database, 10)
    with database.unit_of_work() as session:
        book.grant(session, account_id, 5_000, "plan", granted_at=now(), idempotency_key=f"plan:{account_id}")
    with_twilio = accept(database, account_id)
    assert send(database, with_twilio, gateways, throttle) in ("queued", "sent")
    waiting = accept(database, account_id)

    # when the account is canceled, then Twilio reports the first one delivered and it is settled
    cancel(database, account_id)
    report(database, with_twilio, "delivered", segments=1)
    assert settle(database, with_twilio) == "settled"

    # then the message with Twilio was charged its credit from the plan credits kept for it; the rest of the
    # plan credits expired at the cancel; the waiting message was canceled and never charged
    assert message(database, with_twilio).credits_charged == 1_000
    assert usage_entries(database, with_twilio) == 1
    canceled = message(database, waiting)
    assert (canceled.status, canceled.credits_charged, usage_entries(database, waiting)) == ("canceled", None, 0)
    with database.unit_of_work() as session:
        expired = list(session.scalars(select(Entry.amount).where(Entry.account_id == account_id,
                                                                  Entry.kind == "expiry")))
    assert expired == [-4_000]
    assert lots_by_kind(database, account_id) == {"purchase": 10_000}
    assert (account(database, account_id).balance, account(database, account_id).held) == (10_000, 0)

    # and `creditq ledger verify` finds nothing amiss
    monkeypatch.setenv("DATABASE_URL", database.url)
    monkeypatch.setenv("CREDITQ_ADMIN_KEY", "test-operator-key-0123456789")
    assert main(["ledger", "verify"]) == 0
    assert "clean" in capsys.readouterr().out


def test_a_message_accepted_as_the_account_was_canceled_is_canceled_by_the_send_step_never_sent(
        database, gateways, throttle, simulator):  # noqa: F811
    # given a canceled account and a message intake accepted while the cancel ran (its pre-check read the
    # account before the cancel committed, its row was written after)
    account_id = make_account(database, 10)
    cancel(database, account_id)
    with database.unit_of_work() as session:
        session.add(Message(id="msg_late", account_id=account_id, to="+14155550100", from_="+14155550000",
                            body="late", status="accepted", segments=1, credits_estimated=1_000,
                            created_at=now(), updated_at=now()))
    sent_before = len(simulator.sent()["messages"])

    # when a worker picks it up
    outcome = send(database, "msg_late", gateways, throttle)

    # then it ends canceled, with the reason, nothing held or charged, and Twilio never saw it
    late = message(database, "msg_late")
    assert (outcome, late.status, late.credits_charged) == ("canceled", "canceled", None)
    assert "canceled" in late.error_message
    assert len(simulator.sent()["messages"]) == sent_before
    with database.unit_of_work() as session:
        assert session.scalar(select(Hold.id).where(Hold.reference == "msg_late")) is None
    assert account(database, account_id).held == 0


def test_a_campaign_chunk_fanned_out_as_the_account_was_canceled_makes_canceled_messages_not_parked_ones(database):
    # given a started campaign whose chunk job read it as running before its account's cancel committed
    account_id = make_account(database, 10)
    campaign_id, _ = create(database, account_id)
    with database.unit_of_work() as session:
        chunks = fan_out.start_step(session, campaign_id, 0, now=NOON_NEW_YORK).chunks
        session.get(Account, account_id).status = "canceled"

    # when the chunk is fanned out
    with database.unit_of_work() as session:
        enqueued = fan_out.fan_out_chunk(session, campaign_id, 0, chunks - 1, rate_card=CARD, hold_ttl_seconds=900,
                                         now=NOON_NEW_YORK)

    # then its messages end canceled, nothing enqueued or held, so a reactivation never releases them
    with database.unit_of_work() as session:
        statuses = set(session.scalars(select(Message.status).where(Message.campaign_id == campaign_id)))
    assert (enqueued, statuses, account(database, account_id).held) == ([], {"canceled"}, 0)


@pytest.mark.postgres
def test_a_cancel_racing_send_workers_leaves_each_message_canceled_or_with_twilio_and_the_ledger_whole(
        postgres_database, gateways, throttle):  # noqa: F811
    database = postgres_database
    # given 30 accepted messages of an account
    account_id = make_account(database, 100)
    ids = [accept(database, account_id, body=f"n{n}") for n in range(30)]

    # when five threads send them and the operator's cancel comes among them, a third of the way through
    with ThreadPoolExecutor(5) as pool:
        sends = [pool.submit(send, database, message_id, gateways, throttle) for message_id in ids[:10]]
        canceled = pool.submit(cancel, database, account_id)
        sends += [pool.submit(send, database, message_id, gateways, throttle) for message_id in ids[10:]]
        canceled.result()
        outcomes = [future.result() for future in sends]

    # then every message is either with Twilio (it has a sid and a pending hold) or canceled and uncharged
    assert set(outcomes) <= {"queued", "sent", "canceled", "skipped"}
    for message_id in ids:
        stored = message(database, message_id)
        assert (stored.twilio_sid is not None) != (stored.status == "canceled"), stored.status
        if stored.status == "canceled":
            assert not stored.credits_charged and usage_entries(database, message_id) == 0
    with database.unit_of_work() as session:
        assert verify(session) == []
        pending = session.scalar(select(func.coalesce(func.sum(Hold.amount), 0)).where(
            Hold.account_id == account_id, Hold.status == "pending"))
    assert account(database, account_id).held == pending
