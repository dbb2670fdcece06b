"""Group commit for threads: what threads submit while a batch is being written is written together in the next.

No thread of its own and no waiting for company: the first thread to submit writes its item at once; those that
submit meanwhile queue, and when the batch is written the oldest of them writes the next batch, the queue's
first `max_batch`. Under light load a batch is one item; under load one transaction serves many, and the account
rows they share are locked once for all of them instead of once each, one after another.
"""

import logging
import threading
from collections.abc import Callable
from typing import Generic, TypeVar

log = logging.getLogger(__name__)

Item = TypeVar("Item")
Answer = TypeVar("Answer")

_YOUR_TURN = object()  # the answer that makes a waiting thread write the next batch
_ALONE = object()  # the answer of an item whose batch failed: its thread writes it again alone


class _Submitted:
    __slots__ = ("item", "answer", "ready")

    def __init__(self, item):
        self.item = item
        self.answer = None
        self.ready = threading.Event()


class ThreadGroupCommit(Generic[Item, Answer]):
    """`write(items)` returns one answer per item, in order. When it raises for a batch of several, each of their
    threads writes its item again alone, so a failure belongs to its own item (and is raised to its thread).

    A thread interrupted (dramatiq's time limit raises into it) never strands the others: interrupted while it
    writes, its batch's other items are written again alone by their threads and the next batch goes on; while it
    waits, its item leaves the queue (or, already taken into a batch, is written without it).
    """

    def __init__(self, write: Callable[[list[Item]], list[Answer]], *, max_batch: int):
        self._write, self._max_batch = write, max_batch
        self._lock = threading.Lock()
        self._queue: list[_Submitted] = []
        self._writing = False

    def submit(self, item: Item) -> Answer:
        """The item's answer, once its batch is written; raises what writing it alone raised."""
        mine = _Submitted(item)
        with self._lock:
            self._queue.append(mine)
            leading, self._writing = not self._writing, True
        if not leading:
            self._wait(mine)
            if mine.answer is _ALONE:
                return self._write([item])[0]
            if mine.answer is not _YOUR_TURN:
                return mine.answer
        batch: list[_Submitted] = []
        answers: list = []  # one for each of the batch once it is written; an item without one is written alone
        try:
            with self._lock:  # this thread's item is the queue's first: it was alone, or the oldest when handed over
                batch, self._queue = self._queue[:self._max_batch], self._queue[self._max_batch:]
            try:
                answers = self._write([submitted.item for submitted in batch])
            except Exception as error:
                if len(batch) == 1:
                    raise
                log.warning("a batch of %d failed (%r); each is written again alone", len(batch), error)
        finally:
            for index, submitted in enumerate(batch[1:], start=1):
                submitted.answer = answers[index] if index < len(answers) else _ALONE
                submitted.ready.set()
            self._hand_over()
        return answers[0] if answers else self._write([item])[0]

    def _wait(self, mine: _Submitted) -> None:
        try:
            mine.ready.wait()
        except BaseException:
            with self._lock:
                if mine in self._queue:
                    self._queue.remove(mine)
                    if mine.answer is _YOUR_TURN:  # handed the next batch as it was interrupted: pass it on
                        self._hand_over_locked()
            raise

    def _hand_over(self) -> None:
        with self._lock:
            self._hand_over_locked()

    def _hand_over_locked(self) -> None:
        """The oldest thread still waiting writes the next batch; none waiting, the next to submit will."""
        if not self._queue:
            self._writing = False
            return
        following = self._queue[0]
        following.answer = _YOUR_TURN
        following.ready.set()
