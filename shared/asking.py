"""How a sweep asks a service outside (Twilio, the payment gateway), one record at a time, about what a lost
callback, webhook or job left behind.

The sweepers come every 15 s to a minute as jobs on the worker's `default` queue. While the service is failing, each
ask can wait out the whole timeout, so that one sweep of a few hundred records ran for minutes, the next ones asked
the same records again, and sweeps piled up on the threads that every other `default` job needs. So once the service
fails an ask in a way that says to try again later, a sweep asks nothing more about that record's owner: a tenant's
own Twilio account (rate-limited, say) skips that tenant's records alone, for a tenant must hold up no other; the
deployment's own (owner None, as for the payment gateway) stops the sweep's asking altogether. Likewise once it
refuses the credentials asked with (revoked): the owner's other asks would be refused too, and hundreds of refused
requests every sweep are what gets a caller blocked. The records wait, oldest first, for a later sweep.

A loop whose asks send each record to the back of its order (the record is marked asked) may also stop once its time
is up, its first ask whatever the time; in a loop whose records keep their places a time limit would have the same
first ones asked in every sweep and the rest never.

A sweep's query takes its records in turns across accounts (`in_turns`): every account's oldest record comes before any
account's second, so accounts whose records are refused or skipped (credentials revoked, a Twilio account
rate-limited) take one place each in a batch, not the whole of it. A fixed share per account (50 of 500) let ten
such accounts fill every batch; now it takes as many such accounts as the batch has places (500 overdue holds or
calls, 100 asks about charged texts), for a refused record keeps its place in the order.
"""

import time
from collections.abc import Callable, Hashable, Iterable, Iterator
from typing import TypeVar

from sqlalchemy import Select, func, select

Item = TypeVar("Item")


def in_turns(query: Select, account_id, oldest_first, *, limit: int) -> Select:
    """`query`'s rows (its columns as it names them) in turns across accounts, `limit` at most: ordered by each row's
    turn among its account's rows, oldest first, then by age (see the module's docstring)."""
    wanted = [column.key for column in query.selected_columns]
    ranked = query.add_columns(func.row_number().over(partition_by=account_id, order_by=oldest_first).label("turn"),
                               oldest_first.label("age")).subquery()
    return select(*(ranked.c[key] for key in wanted)).order_by(ranked.c.turn, ranked.c.age).limit(limit)


class Asking:
    def __init__(self, *, clock: Callable[[], float] = time.monotonic):
        self.clock = clock
        self.struggling: set[Hashable] = set()  # owners whose asks the service failed with a "try again later"

    def each(self, items: Iterable[Item], *, owner: Callable[[Item], Hashable] = lambda _: None,
             seconds: float | None = None) -> Iterator[Item]:
        """`items` but those of an owner the service struggled for, none once it struggled for the deployment's own
        (None), and for `seconds` at most when given (the first whatever the time). `owner` names an item's owner:
        a tenant asked with credentials of its own, else None (the default: a service of the deployment's alone,
        like the payment gateway)."""
        until = None if seconds is None else self.clock() + seconds
        for n, item in enumerate(items):
            if None in self.struggling or (n and until is not None and self.clock() >= until):
                return
            if owner(item) not in self.struggling:
                yield item

    def struggled(self, owner: Hashable = None) -> None:
        """The service failed an ask about `owner`'s record in a way that says to try again later (5xx, 429, no
        answer), or refused the credentials it was asked with: ask it nothing more about that owner's records."""
        self.struggling.add(owner)
