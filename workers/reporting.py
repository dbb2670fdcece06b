"""fold_daily_usage: the scheduler's job that folds the ledger's new entries into the daily usage."""

import dramatiq

from shared.reporting import daily_usage

from . import resources


@dramatiq.actor(queue_name="default", max_retries=0, time_limit=300_000)
def fold_daily_usage() -> None:
    """Not retried: the next run folds what this one left. A batch per transaction, until caught up."""
    database = resources.current().database
    while True:
        with database.unit_of_work() as session:
            read = daily_usage.fold_new_entries(session)
        if read < daily_usage.FOLD_LIMIT:
            return
        database.yield_to_writers()
