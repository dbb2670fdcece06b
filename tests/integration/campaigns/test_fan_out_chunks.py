"""Fan-out chunks as independent jobs: side by side, twice, or killed half-way, every recipient gets one message
and one hold."""

import threading
from datetime import timedelta

import pytest
from sqlalchemy import func, select

from shared.campaigns import fan_out
from shared.ledger import book
from shared.models import CampaignChunk, Hold
from tests.integration.campaigns.test_campaigns import (
    CARD,
    NOON_NEW_YORK,
    assert_ledger_clean,
    create,
    fan_out_step,
    held,
    messages_of,
)
from tests.integration.messaging.test_send_pipeline import make_account

RECIPIENTS = [{"to": f"+1212555{index:04d}", "fields": {"name": "x"}} for index in range(200, 207)]


def chunk(database, campaign_id: str, index: int) -> list[str]:
    with database.unit_of_work() as session:
        return fan_out.fan_out_chunk(session, campaign_id, 0, index, rate_card=CARD, hold_ttl_seconds=900,
                                     now=NOON_NEW_YORK)


def pending_holds(database) -> int:
    with database.unit_of_work() as session:
        return session.scalar(select(func.count()).select_from(Hold).where(Hold.status == "pending"))


def assert_each_recipient_once(database, account_id: str, campaign_id: str) -> None:
    messages = messages_of(database, campaign_id)
    assert sorted(m.to for m in messages) == sorted(r["to"] for r in RECIPIENTS)
    assert len({m.hold_id for m in messages}) == len(RECIPIENTS) == pending_holds(database)
    assert held(database, account_id) == 1000 * len(RECIPIENTS)
    assert_ledger_clean(database)


def killed(*args, **kwargs):
    raise ConnectionError("the worker process was killed")


@pytest.mark.parametrize("dies_in", ["_claim", "_insert_messages"])
def test_a_chunk_killed_before_its_commit_makes_everything_once_when_delivered_again(database, monkeypatch, dies_in):
    monkeypatch.setattr(fan_out, "CHUNK_SIZE", 3)
    account_id = make_account(database, 100)
    campaign_id, _ = create(database, account_id, recipients=RECIPIENTS)
    module = book if dies_in == "_claim" else fan_out
    with monkeypatch.context() as crash:
        crash.setattr(module, dies_in, killed)
        with pytest.raises(ConnectionError):
            fan_out_step(database, campaign_id)
    with database.unit_of_work() as session:
        assert session.scalar(select(func.count()).select_from(CampaignChunk)) == 0  # rolled back whole
    assert pending_holds(database) == 0
    ids = [message_id for index in range(3) for message_id in chunk(database, campaign_id, index)]
    assert len(ids) == len(RECIPIENTS)
    assert_each_recipient_once(database, account_id, campaign_id)


@pytest.mark.postgres
def test_chunks_delivered_twice_at_the_same_time_make_each_message_and_hold_once(postgres_database, monkeypatch):
    database = postgres_database
    monkeypatch.setattr(fan_out, "CHUNK_SIZE", 3)
    account_id = make_account(database, 100)
    campaign_id, _ = create(database, account_id, recipients=RECIPIENTS)
    with database.unit_of_work() as session:
        fan_out.start_step(session, campaign_id, 0, now=NOON_NEW_YORK)
    enqueued: list[list[str]] = []
    start = threading.Barrier(6)

    def deliver(index: int) -> None:
        start.wait()
        enqueued.append(chunk(database, campaign_id, index))

    threads = [threading.Thread(target=deliver, args=(index,)) for index in (0, 1, 2) * 2]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(len(ids) for ids in enqueued) == [0, 0, 0, 1, 3, 3]  # each chunk's twin found it made
    assert_each_recipient_once(database, account_id, campaign_id)


def test_a_step_whose_chunk_jobs_were_lost_is_found_stalled_and_fans_out_only_its_missing_chunks(database,
                                                                                                   monkeypatch):
    # Given a step claimed in three chunks, of which only chunk 1 ran: the jobs of 0 and 2 vanished with Redis
    monkeypatch.setattr(fan_out, "CHUNK_SIZE", 3)
    account_id = make_account(database, 100)
    campaign_id, _ = create(database, account_id, recipients=RECIPIENTS)
    with database.unit_of_work() as session:
        assert fan_out.start_step(session, campaign_id, 0, now=NOON_NEW_YORK).missing == (0, 1, 2)
    made = chunk(database, campaign_id, 1)
    # When the campaign_steps job looks for steps fanning out since before a minute ago
    with database.unit_of_work() as session:
        assert fan_out.stalled_steps(session, NOON_NEW_YORK - timedelta(minutes=1)) == []  # too young to tell
        stalled = fan_out.stalled_steps(session, NOON_NEW_YORK + timedelta(minutes=1))
        # Then the step is stalled, and its fan-out job, run again, asks for the lost chunks alone
        assert stalled == [(campaign_id, 0)]
        assert fan_out.start_step(session, campaign_id, 0, now=NOON_NEW_YORK).missing == (0, 2)
    made += chunk(database, campaign_id, 0) + chunk(database, campaign_id, 2)
    # And once they ran every recipient has one message and one hold, and the step is no longer stalled
    assert len(made) == len(RECIPIENTS)
    assert_each_recipient_once(database, account_id, campaign_id)
    with database.unit_of_work() as session:
        assert fan_out.stalled_steps(session, NOON_NEW_YORK + timedelta(minutes=1)) == []
        assert fan_out.start_step(session, campaign_id, 0, now=NOON_NEW_YORK) is None
