"""GroupCommit: the first item goes at once, the ones that came meanwhile share the next batch; a spare writer
starts a batch only beside one gone slow; with `gather`, items in a stream wait for company, a lone one does not."""

import asyncio
import threading
import time

from intake.group_commit import GroupCommit


def recording_batcher(**options) -> tuple[GroupCommit[int, int], list[list[int]]]:
    """A batcher (one writer) whose write answers each item doubled and records each batch it was given."""
    batches: list[list[int]] = []

    def write(items: list[int]) -> list[int]:
        batches.append(list(items))
        return [item * 2 for item in items]

    return GroupCommit(write, writers=1, **options), batches


async def submit_later(batcher: GroupCommit[int, int], items: list[int], delay: float) -> list[int]:
    await asyncio.sleep(delay)
    return list(await asyncio.gather(*(batcher.submit(item) for item in items)))


async def test_the_first_item_is_written_alone_at_once_and_later_ones_together():
    # Given a batcher with one writer
    batcher, batches = recording_batcher()
    batcher.start()
    # When one item is submitted, then two more 50 ms later
    first, later = await asyncio.gather(batcher.submit(1), submit_later(batcher, [2, 3], 0.05))
    await batcher.close()
    # Then the first went alone and the two later ones together; each got its own answer
    assert batches == [[1], [2, 3]]
    assert (first, later) == (2, [4, 6])


def slow_batcher(**options) -> tuple[GroupCommit[int, int], list[list[int]], threading.Event]:
    """A batcher whose first batch is written only once `release` is set; every batch is recorded as it starts."""
    batches: list[list[int]] = []
    release = threading.Event()

    def write(items: list[int]) -> list[int]:
        batches.append(list(items))
        if len(batches) == 1:
            release.wait(5)
        return [item * 2 for item in items]

    return GroupCommit(write, **options), batches, release


async def release_after(release: threading.Event, delay: float) -> None:
    await asyncio.sleep(delay)
    release.set()


async def test_with_a_spare_writer_items_that_come_while_a_batch_goes_quickly_wait_and_share_the_next():
    # Given two writers, the second spare until a batch has run 1 s, and a first batch that takes 300 ms
    batcher, batches, release = slow_batcher(writers=2, spare_after=1.0)
    batcher.start()
    # When one item is submitted, then one 50 ms later and another 150 ms later
    answers = await asyncio.gather(batcher.submit(1), submit_later(batcher, [2], 0.05),
                                   submit_later(batcher, [3], 0.15), release_after(release, 0.3))
    await batcher.close()
    # Then the later two waited for the first batch and went together
    assert batches == [[1], [2, 3]]
    assert answers[:3] == [2, [4], [6]]


async def test_without_a_spare_writer_the_second_writer_takes_the_next_item_at_once():
    # Given two writers, both always ready, and a first batch that takes 300 ms
    batcher, batches, release = slow_batcher(writers=2)
    batcher.start()
    # When the same items come at the same times
    await asyncio.gather(batcher.submit(1), submit_later(batcher, [2], 0.05), submit_later(batcher, [3], 0.15),
                         release_after(release, 0.3))
    await batcher.close()
    # Then the second writer took the second item alone at once, and the third when it came
    assert batches == [[1], [2], [3]]


async def test_a_batch_slower_than_spare_after_does_not_stop_the_next():
    # Given two writers, the second spare until a batch has run 50 ms, and a first batch held until released
    batcher, batches, release = slow_batcher(writers=2, spare_after=0.05)
    batcher.start()
    first = asyncio.ensure_future(batcher.submit(1))
    await asyncio.sleep(0.01)
    # When a second item comes while the first batch is held
    second = await asyncio.wait_for(batcher.submit(2), timeout=2)
    # Then the spare writer wrote it, the first batch still held
    assert second == 4 and not first.done() and batches == [[1], [2]]
    release.set()
    assert await first == 2
    await batcher.close()


async def test_a_third_writer_waits_until_the_newest_batch_in_flight_has_run_spare_after():
    # Given three writers, the spares after 300 ms, and batches held until released, each start recorded
    started: dict[int, float] = {}
    release = threading.Event()

    def write(items: list[int]) -> list[int]:
        started[items[0]] = time.monotonic()
        release.wait(5)
        return [item * 2 for item in items]

    batcher = GroupCommit(write, writers=3, spare_after=0.3)
    batcher.start()
    # When an item comes, a second 50 ms later, and a third 300 ms after that
    answers = [asyncio.ensure_future(batcher.submit(1))]
    await asyncio.sleep(0.05)
    answers.append(asyncio.ensure_future(batcher.submit(2)))
    await asyncio.sleep(0.3)
    answers.append(asyncio.ensure_future(batcher.submit(3)))
    await asyncio.sleep(0.6)
    release.set()
    assert await asyncio.gather(*answers) == [2, 4, 6]
    await batcher.close()
    # Then the second went once the first had run 300 ms, and the third once the second had too, though the first
    # had run that long already when it came
    assert started[2] - started[1] >= 0.25 and started[3] - started[2] >= 0.25


async def test_with_gather_items_in_a_stream_wait_for_company():
    # Given a batcher that gathers for 200 ms, and a first batch of two items (a stream)
    batcher, batches = recording_batcher(gather=0.2)
    batcher.start()
    assert await asyncio.gather(batcher.submit(1), batcher.submit(2)) == [2, 4]
    # When one item comes, then another 100 ms later
    answers = await asyncio.gather(batcher.submit(3), submit_later(batcher, [4], 0.1))
    await batcher.close()
    # Then the first waited for the second, and they went together
    assert batches == [[1, 2], [3, 4]]
    assert answers == [6, [8]]


async def test_with_gather_a_lone_item_goes_at_once():
    # Given a batcher that gathers for 200 ms, nothing written yet
    batcher, batches = recording_batcher(gather=0.2)
    batcher.start()
    # When one item comes, then another 100 ms later
    await asyncio.gather(batcher.submit(1), submit_later(batcher, [2], 0.1))
    await batcher.close()
    # Then each went alone: the first did not wait for company
    assert batches == [[1], [2]]


async def test_with_gather_an_item_that_waited_for_a_writer_that_long_goes_when_one_is_free():
    # Given one writer that gathers for 100 ms, and a first batch of two items held for 300 ms
    batcher, batches, release = slow_batcher(writers=1, gather=0.1)
    batcher.start()
    first = asyncio.gather(batcher.submit(1), batcher.submit(2))
    # When an item comes 50 ms later, and another 100 ms after the first batch is released
    third = await asyncio.gather(submit_later(batcher, [3], 0.05), release_after(release, 0.3),
                                 submit_later(batcher, [4], 0.4))
    await first
    await batcher.close()
    # Then the third, 250 ms old when the writer was free, went at once and alone
    assert batches == [[1, 2], [3], [4]]
    assert third[0] == [6] and third[2] == [8]


async def test_closing_writes_a_batch_still_waiting_for_company():
    # Given a batcher that gathers for 5 s, in a stream, and an item waiting for company
    batcher, batches = recording_batcher(gather=5.0)
    batcher.start()
    await asyncio.gather(batcher.submit(1), batcher.submit(2))
    waiting = asyncio.ensure_future(batcher.submit(3))
    await asyncio.sleep(0.05)
    # When the batcher closes
    await asyncio.wait_for(batcher.close(), timeout=2)
    # Then the waiting item was written and answered
    assert await waiting == 6
    assert batches == [[1, 2], [3]]
