"""GroupCommit: the first item goes at once, the ones that came meanwhile share the next batch."""

import asyncio

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
