"""Group commit for POST /v1/messages: the requests that arrive together are accepted in one unit of work,
yet each gets its own answer, only once its message is committed; a failed enqueue loses nothing."""

import asyncio
from contextlib import asynccontextmanager

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from intake.app import init_app
from intake.enqueue import Enqueuer
from intake.routes.messages import AcceptBatcher
from shared.errors import InsufficientCredits, NotFound, OptedOut, ValidationFailed
from shared.messaging.messages import MessageRequest
from shared.messaging.opt_outs import opt_out
from shared.models import Message
from tests.integration.messaging.test_send_pipeline import RECIPIENT, SENDER, UNCAPPED, make_account, message

OPERATOR = {"Authorization": "Bearer test-operator-key-0123456789"}


@asynccontextmanager
async def running(database, enqueuer: Enqueuer):
    batcher = AcceptBatcher(database, enqueuer, cap=UNCAPPED, writers=1)
    batcher.start()
    try:
        yield batcher
    finally:
        await batcher.close()


def units_of_work(database, monkeypatch) -> list[int]:
    """Counts the units of work the database hands out from now on."""
    opened = []
    original = database.unit_of_work

    def counted():
        opened.append(1)
        return original()

    monkeypatch.setattr(database, "unit_of_work", counted)
    return opened


def stored_count(database) -> int:
    with database.unit_of_work() as session:
        return session.scalar(select(func.count()).select_from(Message))


POOR_SENDER = "+14155550001"


def request(body: str = "hello", to: str = RECIPIENT, from_: str = SENDER) -> MessageRequest:
    return MessageRequest(to=to, from_=from_, body=body)


async def test_each_request_of_a_batch_gets_its_own_answer(database, broker, monkeypatch):
    # given an account that can pay, one that cannot pay two segments, and an opted-out recipient
    rich, poor = make_account(database, 10), make_account(database, 1, sender=POOR_SENDER)
    with database.unit_of_work() as session:
        opt_out(session, rich, "+14155550199", "api")
    opened = units_of_work(database, monkeypatch)

    # when five requests arrive together, four of them bad in different ways
    async with running(database, Enqueuer(broker)) as batcher:
        answers = await asyncio.gather(
            batcher.accept(rich, request()),
            batcher.accept(rich, request(to="12")),
            batcher.accept(rich, request(to="+14155550199")),
            batcher.accept(poor, request(body="ж" * 71, from_=POOR_SENDER)),
            batcher.accept("acct_missing", request()),
            return_exceptions=True)

    # then they were written in one unit of work, the good one is stored and its job queued, and each bad
    # one gets its own refusal
    assert len(opened) == 1
    good, bad_number, opted_out, too_dear, no_account = answers
    assert (good["status"], good["estimate"]) == ("accepted", {"segments": 1, "encoding": "GSM-7", "credits": "1"})
    assert message(database, good["id"]).status == "accepted"
    assert isinstance(bad_number, ValidationFailed) and set(bad_number.errors) == {"to"}
    assert isinstance(opted_out, OptedOut)
    assert isinstance(too_dear, InsufficientCredits) and (too_dear.available, too_dear.required) == (1000, 2000)
    assert isinstance(no_account, NotFound)
    assert stored_count(database) == 1
    assert broker.do_qsize("send") == 1


async def test_a_row_the_database_refuses_fails_alone(database, broker, monkeypatch):
    # given a message already stored, and a batch whose first message would get the same id
    account_id = make_account(database, 10)
    async with running(database, Enqueuer(broker)) as batcher:
        taken = (await batcher.accept(account_id, request()))["id"]
    ids = iter([taken, "msg_b1", "msg_b2", taken, "msg_s1", "msg_s2"])  # the batch, then one by one
    monkeypatch.setattr("shared.messaging.messages.new_id", lambda prefix: next(ids))

    # when the three arrive together
    async with running(database, Enqueuer(broker)) as batcher:
        clash, *others = await asyncio.gather(*(batcher.accept(account_id, request(f"hello {n}")) for n in range(3)),
                                              return_exceptions=True)

    # then only the clashing one fails; the others are stored and queued
    assert isinstance(clash, IntegrityError)
    assert [answer["id"] for answer in others] == ["msg_s1", "msg_s2"]
    assert stored_count(database) == 3
    assert broker.do_qsize("send") == 3


async def test_jobs_are_enqueued_and_answers_given_only_after_the_commit(database, broker):
    # given an enqueuer that looks, from another transaction, for each message it is asked to send
    account_id = make_account(database, 10)
    seen_committed = []

    class Looking(Enqueuer):
        def send_many_blocking(self, actor_name, args_list, *, delays_ms=None):
            seen_committed.extend(message(database, message_id) is not None for message_id, in args_list)
            super().send_many_blocking(actor_name, args_list, delays_ms=delays_ms)

    # when three messages are accepted together
    async with running(database, Looking(broker)) as batcher:
        answers = await asyncio.gather(*(batcher.accept(account_id, request(f"hello {n}")) for n in range(3)))

    # then every message was committed before its job was queued, and is there when its 202 comes back
    assert seen_committed == [True, True, True]
    assert [message(database, answer["id"]).status for answer in answers] == ["accepted"] * 3
    assert broker.do_qsize("send") == 3


async def test_a_failed_enqueue_still_answers_202_and_leaves_the_message_for_the_sweeper(database):
    # given Redis is down
    account_id = make_account(database, 10)

    class Down(Enqueuer):
        def send_many_blocking(self, actor_name, args_list, *, delays_ms=None):
            raise ConnectionError("Redis is down")

    # when a message is accepted
    async with running(database, Down()) as batcher:
        answer = await batcher.accept(account_id, request())

    # then it is stored `accepted` without a job, which is what the sweeper enqueues
    stored = message(database, answer["id"])
    assert (stored.status, stored.enqueued_at) == ("accepted", None)


async def test_an_idempotent_retry_replays_the_first_answer(aiohttp_client, settings, sqlite_database, broker):
    # given a message POSTed with an Idempotency-Key
    account_id = make_account(sqlite_database, 10)
    client = await aiohttp_client(init_app(settings, database=sqlite_database, broker=broker))
    headers = {**OPERATOR, "Idempotency-Key": "send-1"}
    body = {"account_id": account_id, "to": RECIPIENT, "from": SENDER, "body": "hello"}
    first = await client.post("/v1/messages", headers=headers, json=body)

    # when it is retried, and the key is reused for another body
    again = await client.post("/v1/messages", headers=headers, json=body)
    other = await client.post("/v1/messages", headers=headers, json={**body, "body": "another"})

    # then the retry gets the first answer without a second message, and the other body a 409
    assert (first.status, again.status, again.headers.get("Idempotent-Replayed")) == (202, 202, "true")
    assert await again.json() == await first.json()
    assert other.status == 409
    assert stored_count(sqlite_database) == 1
    assert broker.do_qsize("send") == 1
