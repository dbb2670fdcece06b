"""Group commit: requests that arrive while the writers are busy are written together, in one unit of work.

Under light load a batch is one request, so nothing waits for company; under load one commit (and one
Redis round trip for the jobs it owes) serves many requests. Each request still gets its own answer,
and only once what it asked for is committed.
"""

import asyncio
from collections.abc import Callable
from typing import Generic, NamedTuple, TypeVar

Item = TypeVar("Item")
Answer = TypeVar("Answer")


class _Submitted(NamedTuple):
    item: object
    answer: asyncio.Future
    came: float  # loop time


class GroupCommit(Generic[Item, Answer]):
    """Feeds batches of submitted items to `write`, run in a thread: it returns one answer per item, in order,
    an exception instance for an item that failed (raised to that item's caller alone).

    Two writers by default, so a batch waiting on a row lock does not stop the rest; more only adds GIL
    contention and smaller batches. With `spare_after` (seconds), a writer beyond the first starts a batch only once
    every batch in flight has run that long: a batch waiting on a lock still does not stop the rest, and the items
    that come while the batches go quickly wait for one writer, so they make fewer, bigger batches.

    With `gather` (seconds), for items whose callers can wait (Twilio's callbacks, not a client's POST): while
    they come in a stream (the batch before had company), a writer takes its batch only once the first item is
    `gather` old, so one commit serves many items even when the writers are quick (a web the CPU serves before
    the workers finishes each batch before the next item comes). A lone item still goes at once.
    """

    def __init__(self, write: Callable[[list[Item]], list[Answer | BaseException]], *, max_batch: int = 200,
                 writers: int = 2, spare_after: float | None = None, gather: float = 0.0):
        self._write_batch, self._max_batch, self._spare_after, self._gather = write, max_batch, spare_after, gather
        self._writers = asyncio.Semaphore(writers)
        self._queue: asyncio.Queue[_Submitted] = asyncio.Queue()
        self._in_stream = False  # the last batch taken had company
        self._gathering: list[_Submitted] = []  # a batch waiting for company
        self._writing: dict[asyncio.Task, float] = {}  # the batches in flight, with when each started

    async def submit(self, item: Item) -> Answer:
        """The item's answer, once its batch is written; raises the item's exception."""
        loop = asyncio.get_running_loop()
        answer = loop.create_future()
        self._queue.put_nowait(_Submitted(item, answer, loop.time()))
        return await answer

    def start(self) -> None:
        self._runner = asyncio.create_task(self._run())

    async def close(self) -> None:
        """Stop taking batches; write what is still queued and let the batches in flight finish, so every
        item taken gets its answer."""
        self._runner.cancel()
        left = [*self._gathering, *(self._queue.get_nowait() for _ in range(self._queue.qsize()))]
        if left:
            await self._write(left)
        if self._writing:
            await asyncio.wait(set(self._writing))

    async def _run(self) -> None:
        """Take a writer, then everything queued by then (after the gather, if any; up to max_batch), and write it as
        one batch."""
        loop = asyncio.get_running_loop()
        while True:
            await self._writers.acquire()
            if self._spare_after is not None and self._writing:  # a spare writer: only for batches gone slow
                started = max(self._writing.values())  # the newest batch in flight: every one has run so long
                await asyncio.wait(set(self._writing), timeout=max(0.0, started + self._spare_after - loop.time()),
                                   return_when=asyncio.FIRST_COMPLETED)
            batch = [await self._queue.get()]
            ready_at = batch[0].came + self._gather
            if self._gather and self._in_stream and loop.time() < ready_at:
                self._gathering = batch  # close() writes it if it comes meanwhile
                await asyncio.sleep(ready_at - loop.time())
                self._gathering = []
            while len(batch) < self._max_batch and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            self._in_stream = len(batch) > 1
            task = asyncio.create_task(self._write(batch))
            self._writing[task] = loop.time()
            task.add_done_callback(self._written)

    def _written(self, task: asyncio.Task) -> None:
        del self._writing[task]
        self._writers.release()

    async def _write(self, batch: list[_Submitted]) -> None:
        try:
            outcomes = await asyncio.to_thread(self._write_batch, [submitted.item for submitted in batch])
        except asyncio.CancelledError:  # the loop is going away: the answers are unknown
            for submitted in batch:
                submitted.answer.cancel()
            raise
        except Exception as error:  # a bug in `write`: every item of the batch meets it
            outcomes = [error] * len(batch)
        for submitted, outcome in zip(batch, outcomes):
            answer = submitted.answer
            if answer.done():  # its request went away; what it asked for stands
                continue
            if isinstance(outcome, BaseException):
                answer.set_exception(outcome)
            else:
                answer.set_result(outcome)
