"""Webhook attempts under way at once: a few of one account's, half a worker's threads in all, each account slot
lapsing with its lease; an attempt finding none free deferred, not made, then left to the sweeper, which takes
deliveries in turns across accounts."""

import time
from datetime import timedelta

import fakeredis
import pytest

from shared.events import delivery, outbox
from shared.events.slots import WebhookSlots
from shared.events.transport import Answer
from shared.models import WebhookDelivery
from tests.unit.events.test_delivery import SETTINGS, START, Clock, dispatched, given_an_event_for, stored

LEASE = 15.0


@pytest.fixture
def slots():
    return WebhookSlots(fakeredis.FakeRedis(), per_account=2, per_process=4)


def test_an_account_takes_its_few_slots_and_no_other_account_fewer():
    # given an account allowed two attempts at once across every process, and a process allowing many
    slots = WebhookSlots(fakeredis.FakeRedis(), per_account=2, per_process=16)

    # when an account's attempts ask for slots, then two get one and the third none; another account's get one
    first, second, third = (slots.take("acct_1", seconds=LEASE) for _ in range(3))
    assert first and second and first != second and third is None
    assert slots.take("acct_2", seconds=LEASE)

    # and a slot given back is the next attempt's
    slots.give_back("acct_1", first)
    assert slots.take("acct_1", seconds=LEASE) and slots.take("acct_1", seconds=LEASE) is None


def test_a_process_gives_webhooks_its_share_of_threads_and_no_more(slots):
    # given four accounts' attempts under way in this process, which allows four
    tokens = {account_id: slots.take(account_id, seconds=LEASE) for account_id in ("acct_1", "acct_2", "acct_3",
                                                                                    "acct_4")}

    # then a fifth account's attempt finds no slot, until one of them is over
    assert slots.take("acct_5", seconds=LEASE) is None
    slots.give_back("acct_2", tokens["acct_2"])
    assert slots.take("acct_5", seconds=LEASE)


def test_one_account_alone_takes_half_of_a_process_webhook_slots_and_with_others_an_equal_share():
    # given a process allowing four attempts, and an account allowed ten across every process
    slots = WebhookSlots(fakeredis.FakeRedis(), per_account=10, per_process=4)

    # then an account alone takes two of them, and another account arriving one
    first, *_ = taken = [slots.take("acct_1", seconds=LEASE) for _ in range(3)]
    assert [bool(token) for token in taken] == [True, True, False]
    assert [bool(slots.take("acct_2", seconds=LEASE)) for _ in range(2)] == [True, False]

    # and once one of the first account's is over, it does not take the slot back while the other is under way
    # (a share each, and one for an account arriving): a third account arriving does
    slots.give_back("acct_1", first)
    assert slots.take("acct_1", seconds=LEASE) is None and slots.take("acct_3", seconds=LEASE)


def test_a_process_last_free_slot_is_for_an_account_with_no_attempt_under_way_in_it():
    # given a process allowing four attempts, and three accounts' attempts under way in it (say their endpoints are
    # slow)
    slots = WebhookSlots(fakeredis.FakeRedis(), per_account=10, per_process=4)
    tokens = {account_id: slots.take(account_id, seconds=LEASE) for account_id in ("acct_1", "acct_2", "acct_3")}

    # then none of them takes the last slot: a fourth account's attempt does
    assert [slots.take(account_id, seconds=LEASE) for account_id in tokens] == [None] * 3
    assert slots.take("acct_4", seconds=LEASE)

    # and once an attempt is over, its slot, now the last, is again for an account with none under way: its own
    slots.give_back("acct_1", tokens["acct_1"])
    assert slots.take("acct_2", seconds=LEASE) is None and slots.take("acct_1", seconds=LEASE)


def test_an_account_slot_whose_attempt_never_gave_it_back_lapses_with_its_lease():
    # given an account's two slots taken by attempts of a worker process then killed, their leases short
    redis = fakeredis.FakeRedis()
    killed, alive = (WebhookSlots(redis, per_account=2, per_process=8) for _ in range(2))
    assert killed.take("acct_1", seconds=0.05) and killed.take("acct_1", seconds=0.05)
    assert alive.take("acct_1", seconds=LEASE) is None

    # when their leases are over, then another process takes them
    time.sleep(0.1)
    assert alive.take("acct_1", seconds=LEASE) and alive.take("acct_1", seconds=LEASE)


class RedisFailingToForget(fakeredis.FakeRedis):
    def zrem(self, *args):
        raise ConnectionError("Redis went away")


def test_a_redis_failing_as_a_slot_is_given_back_costs_that_slot_its_lease_and_no_more():
    slots = WebhookSlots(RedisFailingToForget(), per_account=1, per_process=1)
    slots.give_back("acct_1", slots.take("acct_1", seconds=0.05))  # logged, not raised
    time.sleep(0.1)
    assert slots.take("acct_1", seconds=LEASE)  # the process's slot came back at once, the account's with its lease


def poster_keeping(posted: list):
    def poster(target, body, headers, *, timeout):
        posted.append(body)
        return Answer(200, "ok")
    return poster


def test_an_attempt_finding_no_slot_is_deferred_not_made_then_left_to_the_sweeper(sqlite_database, slots):
    # given an account with both of its slots taken by attempts under way, and a delivery of its due
    _, _, event_id = given_an_event_for(sqlite_database, "http://127.0.0.1:9/hooks")
    delivery_id = dispatched(sqlite_database, event_id)
    held = [slots.take("acct_1", seconds=LEASE) for _ in range(2)]
    posted, clock = [], Clock()

    def attempt(deferrals: int = 0):
        return delivery.attempt(sqlite_database, delivery_id, settings=SETTINGS, development=True, now=clock,
                                poster=poster_keeping(posted), slots=slots, deferrals=deferrals)

    # when it is attempted
    first = attempt()

    # then nothing was posted and it counts as no attempt: it is due again in a few seconds, and no sooner
    assert (first.status, posted, stored(sqlite_database, delivery_id).attempts) == ("deferred", [], 0)
    assert delivery.FIRST_DEFERRAL_SECONDS[0] <= first.retry_in_seconds <= delivery.FIRST_DEFERRAL_SECONDS[1]
    assert attempt().status == "not_due"

    # and its job tries again, each time after twice as long, and then, still finding no slot, leaves it due at once
    # for the sweeper, with no job of its own
    wait = first.retry_in_seconds
    for deferrals in range(1, delivery.QUICK_TRIES):
        clock.now += timedelta(seconds=wait)
        again = attempt(deferrals=deferrals)
        assert again.status == "deferred" and 2 ** deferrals <= again.retry_in_seconds <= 3 * 2 ** deferrals
        wait = again.retry_in_seconds
    clock.now += timedelta(seconds=wait)
    assert attempt(deferrals=delivery.QUICK_TRIES) == delivery.Outcome("deferred", None)
    with sqlite_database.unit_of_work() as session:
        assert delivery.lost(session, now=clock.now + timedelta(seconds=60), stale_after=timedelta(seconds=60)) \
            .deliveries == [delivery_id]

    # and once a slot is free it is made, and its slot given back
    slots.give_back("acct_1", held[0])
    assert attempt(deferrals=2).status == "succeeded" and len(posted) == 1
    assert slots.take("acct_1", seconds=LEASE)


def test_an_attempt_finding_no_slot_through_its_whole_retry_window_fails(sqlite_database, slots):
    # given a delivery past its retry window whose account's slots are all taken
    _, _, event_id = given_an_event_for(sqlite_database, "http://127.0.0.1:9/hooks")
    delivery_id = dispatched(sqlite_database, event_id)
    for _ in range(2):
        slots.take("acct_1", seconds=LEASE)
    clock = Clock()
    clock.now = START + timedelta(seconds=SETTINGS.retry_window_seconds + 1)

    # when it is attempted, then it fails, saying why
    assert delivery.attempt(sqlite_database, delivery_id, settings=SETTINGS, development=True, now=clock,
                            poster=poster_keeping([]), slots=slots).status == "failed"
    failed = stored(sqlite_database, delivery_id)
    assert (failed.status, failed.error, failed.next_attempt_at) == ("failed", delivery.NO_SLOT, None)


def test_the_sweeper_takes_lost_deliveries_in_turns_across_accounts(sqlite_database, monkeypatch):
    # given an account with a sweep batch's worth of deliveries due long ago, and another account's due after them
    monkeypatch.setattr(delivery, "SWEEP_BATCH", 2)
    _, _, event_id = given_an_event_for(sqlite_database, "http://127.0.0.1:9/hooks")
    with sqlite_database.unit_of_work() as session:
        second_event = outbox.emit(session, "balance.low", account_id="acct_1", key="balance.low:second", data={},
                                   now=START)
    first, _ = dispatched(sqlite_database, event_id), dispatched(sqlite_database, second_event)
    _, _, other_event = given_an_event_for(sqlite_database, "http://127.0.0.1:9/other", account_id="acct_2")
    other = dispatched(sqlite_database, other_event)
    with sqlite_database.unit_of_work() as session:
        session.get(WebhookDelivery, other).next_attempt_at = START + timedelta(seconds=1)

    # when the sweeper looks for lost deliveries, then it takes the first account's oldest, then the other's
    with sqlite_database.unit_of_work() as session:
        assert delivery.lost(session, now=START + timedelta(hours=1), stale_after=timedelta(seconds=60)) \
            .deliveries == [first, other]
