"""GroupCommit: batches, the linger that gathers company for a batch's first item, and a close that answers all."""

import asyncio

from intake.group_commit import GroupCommit


def recording_batcher(**options) -> tuple[GroupCommit[int, int], list[list[int]]]:
    """A batcher whose write answers each item doubled and records each batch it was given."""
    batches: list[list[int]] = []

    def write(items: list[int]) -> list[int]:
        batches.append(list(items))
        return [item * 2 for item in items]

    return GroupCommit(write, writers=1, **options), batches


async def submit_later(batcher: GroupCommit[int, int], items: list[int], delay: float) -> list[int]:
    await asyncio.sleep(delay)
    return list(await asyncio.gather(*(batcher.submit(item) for item in items)))


async def test_without_a_linger_the_first_item_is_written_alone_at_once():
    # Given a batcher with no linger
    batcher, batches = recording_batcher()
    batcher.start()
    # When one item is submitted, then two more 50 ms later
    first, later = await asyncio.gather(batcher.submit(1), submit_later(batcher, [2, 3], 0.05))
    await batcher.close()
    # Then the first went alone and the two later ones together; each got its own answer
    assert batches == [[1], [2, 3]]
    assert (first, later) == (2, [4, 6])


async def test_a_linger_holds_the_first_item_for_the_items_that_come_meanwhile():
    # Given a batcher that lingers half a second for company
    batcher, batches = recording_batcher(linger=0.5)
    batcher.start()
    # When one item is submitted, then two more 50 ms later
    first, later = await asyncio.gather(batcher.submit(1), submit_later(batcher, [2, 3], 0.05))
    await batcher.close()
    # Then all three share one batch, and each still gets its own answer
    assert batches == [[1, 2, 3]]
    assert (first, later) == (2, [4, 6])


async def test_closing_while_a_batch_lingers_writes_it_and_answers_every_item():
    # Given an item lingering for company (a long linger) and one queued behind it
    batcher, batches = recording_batcher(linger=30)
    batcher.start()
    answers = [asyncio.ensure_future(batcher.submit(item)) for item in (1, 2)]
    await asyncio.sleep(0.05)
    # When the batcher is closed
    await asyncio.wait_for(batcher.close(), 5)
    # Then both were written and answered, none lost with the lingering runner
    assert [answer.result() for answer in answers] == [2, 4]
    assert sorted(item for batch in batches for item in batch) == [1, 2]
