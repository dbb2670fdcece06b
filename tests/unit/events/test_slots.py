"""An account's webhook attempts under way at once: no limit while its endpoints answer quickly, a few slots once an
attempt of its was slow, each lapsing with its lease; and an attempt finding none free deferred, not made."""

import time
from datetime import timedelta

import fakeredis
import pytest

from shared.events import delivery
from shared.events.slots import AccountSlots
from shared.events.transport import Answer
from tests.unit.events.test_delivery import SETTINGS, START, Clock, dispatched, given_an_event_for, stored

LEASE = 15.0


@pytest.fixture
def slots():
    return AccountSlots(fakeredis.FakeRedis(), 2, slow_seconds=1.0)


def test_an_account_whose_attempts_are_quick_takes_no_slot(slots):
    # given an account whose last attempt took half a second
    slots.give_back("acct_1", "whd_0", took_seconds=0.5)

    # then any number of its attempts may go at once
    assert all(slots.take("acct_1", f"whd_{n}", seconds=LEASE) for n in range(10))


def test_a_slow_attempt_leaves_its_account_a_few_slots_and_no_other_account_fewer(slots):
    # given an account whose last attempt took its whole timeout
    slots.give_back("acct_1", "whd_0", took_seconds=10.0)

    # when its next attempts ask for slots, then two go and the third waits; another account's go
    assert [slots.take("acct_1", f"whd_{n}", seconds=LEASE) for n in (1, 2, 3)] == [True, True, False]
    assert all(slots.take("acct_2", f"whd_2{n}", seconds=LEASE) for n in range(5))

    # and a slot given back (a quick answer, this time) is the next attempt's; one holding a slot may ask again
    slots.give_back("acct_1", "whd_1", took_seconds=0.1)
    assert [slots.take("acct_1", "whd_3", seconds=LEASE), slots.take("acct_1", "whd_2", seconds=LEASE)] == [True, True]
    assert not slots.take("acct_1", "whd_4", seconds=LEASE)


def test_a_slot_whose_attempt_never_gave_it_back_lapses_with_its_lease(slots):
    # given a slow account whose two slots were taken by attempts of a worker then killed, their leases short
    slots.give_back("acct_1", "whd_0", took_seconds=10.0)
    assert slots.take("acct_1", "whd_1", seconds=0.05) and slots.take("acct_1", "whd_2", seconds=0.05)
    assert not slots.take("acct_1", "whd_3", seconds=LEASE)

    # when their leases are over, then their slots are free again
    time.sleep(0.1)
    assert slots.take("acct_1", "whd_3", seconds=LEASE) and slots.take("acct_1", "whd_4", seconds=LEASE)


def test_a_slow_account_with_no_slot_free_has_its_attempt_deferred_not_made(sqlite_database, slots):
    # given a slow account with both of its slots taken by attempts under way, and a delivery of its due
    _, _, event_id = given_an_event_for(sqlite_database, "http://127.0.0.1:9/hooks")
    delivery_id = dispatched(sqlite_database, event_id)
    slots.give_back("acct_1", "whd_0", took_seconds=10.0)
    assert slots.take("acct_1", "whd_1", seconds=LEASE) and slots.take("acct_1", "whd_2", seconds=LEASE)
    posted, clock = [], Clock()

    def poster(target, body, headers, *, timeout):
        posted.append(body)
        return Answer(200, "ok")

    # when it is attempted
    outcome = delivery.attempt(sqlite_database, delivery_id, settings=SETTINGS, development=True, now=clock,
                               poster=poster, slots=slots)

    # then nothing was posted and it counts as no attempt: it is due again after the deferral, and no sooner
    assert (outcome.status, posted, stored(sqlite_database, delivery_id).attempts) == ("deferred", [], 0)
    assert 0.5 * SETTINGS.timeout_seconds <= outcome.retry_in_seconds <= 1.5 * SETTINGS.timeout_seconds
    assert delivery.attempt(sqlite_database, delivery_id, settings=SETTINGS, development=True, now=clock,
                            poster=poster, slots=slots).status == "not_due"

    # and once a slot is free and the deferral over, it is made, and its slot given back
    slots.give_back("acct_1", "whd_1", took_seconds=0.1)
    clock.now = START + timedelta(seconds=outcome.retry_in_seconds)
    assert delivery.attempt(sqlite_database, delivery_id, settings=SETTINGS, development=True, now=clock,
                            poster=poster, slots=slots).status == "succeeded"
    assert len(posted) == 1 and slots.take("acct_1", "whd_5", seconds=LEASE)


def test_a_deferral_doubles_up_to_its_most_and_is_spread_either_way():
    for deferrals, base in ((0, 2), (1, 4), (3, 16), (30, delivery.MAX_DEFERRAL_SECONDS)):
        waits = [delivery.deferral_seconds(deferrals, SETTINGS) for _ in range(200)]
        assert base * 0.5 <= min(waits) < max(waits) <= base * 1.5
