"""GroupCommit: the first item goes at once, the ones that came meanwhile share the next batch; a spare writer
starts a batch only beside one gone slow."""

import asyncio
import threading
import time

from intake.group_commit import GroupCommit


def recording_batcher() -> tuple[GroupCommit[int, int], list[list[int]]]:
    """A batcher whose write answers each item doubled and records each batch it was given."""
    batches: list[list[int]] = []

    def write(items: list[int]) -> list[int]:
        batches.append(list(items))
        return [item * 2 for item in items]

    return GroupCommit(write, writers=1), batches


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
