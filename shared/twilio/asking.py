"""How long a sweep goes on asking Twilio, one record at a time, about what a lost callback or job left behind.

The sweepers come every 15 s as jobs on the worker's `default` queue. At Twilio's usual latency a few hundred asks
outlast that, and while Twilio is failing each ask can wait out the whole timeout (15 s, twice: connecting and
reading), so that one sweep ran for minutes, the next ones asked the same records again, and sweeps piled up on the
threads that every other `default` job needs. So each loop of asks stops once its time is up (its first ask always
goes, so a sweep always makes progress), and a sweep asks nothing more once Twilio failed one of its asks in a way
that says to try again later: the records wait, oldest first, for a later sweep.
"""

import time
from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

Item = TypeVar("Item")


class Asking:
    def __init__(self, seconds: float, *, clock: Callable[[], float] = time.monotonic):
        self.seconds = seconds  # each loop's time for asking
        self.clock = clock
        self.twilio_struggling = False

    def each(self, items: Iterable[Item]) -> Iterator[Item]:
        """`items` while this loop has time left (the first whatever the time) and Twilio has not struggled."""
        until = self.clock() + self.seconds
        for n, item in enumerate(items):
            if self.twilio_struggling or (n and self.clock() >= until):
                return
            yield item

    def struggled(self) -> None:
        """Twilio failed an ask in a way that says to try again later (5xx, 429, no answer): ask it nothing more."""
        self.twilio_struggling = True
