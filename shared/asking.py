"""How a sweep asks a service outside (Twilio, the payment gateway), one record at a time, about what a lost
callback, webhook or job left behind.

The sweepers come every 15 s to a minute as jobs on the worker's `default` queue. While the service is failing, each
ask can wait out the whole timeout, so that one sweep of a few hundred records ran for minutes, the next ones asked
the same records again, and sweeps piled up on the threads that every other `default` job needs. So a sweep asks
nothing more once the service failed one of its asks in a way that says to try again later: the records wait,
oldest first, for a later sweep. A loop whose asks send each record to the back of its order (the record is marked
asked) may also stop once its time is up, its first ask whatever the time; in a loop whose records keep their places
a time limit would have the same first ones asked in every sweep and the rest never.
"""

import time
from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

Item = TypeVar("Item")


class Asking:
    def __init__(self, *, clock: Callable[[], float] = time.monotonic):
        self.clock = clock
        self.service_struggling = False

    def each(self, items: Iterable[Item], *, seconds: float | None = None) -> Iterator[Item]:
        """`items` until the service struggles, and for `seconds` at most when given (the first whatever the time)."""
        until = None if seconds is None else self.clock() + seconds
        for n, item in enumerate(items):
            if self.service_struggling or (n and until is not None and self.clock() >= until):
                return
            yield item

    def struggled(self) -> None:
        """The service failed an ask in a way that says to try again later (5xx, 429, no answer): ask it nothing
        more."""
        self.service_struggling = True
