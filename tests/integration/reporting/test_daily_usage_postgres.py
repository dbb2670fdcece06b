"""Daily usage on a real PostgreSQL: two folders at once add every entry exactly once, and an entry whose id was
taken before a higher one committed is not skipped."""

import threading
from datetime import date, datetime, timezone

import pytest
from sqlalchemy import func, select

from shared.models import Entry
from shared.reporting import daily_usage
from tests.support.spending import new_account, number_fee, send

pytestmark = pytest.mark.postgres

UTC = timezone.utc
NOW = datetime(2021, 3, 1, tzinfo=UTC)
MARCH = dict(since=date(2021, 3, 1), until=date(2021, 3, 31))


def stored_total(database, account_id: str) -> int:
    with database.read_only() as session:
        return session.execute(select(func.coalesce(func.sum(daily_usage.daily_usage.c.millicredits), 0))
                               .where(daily_usage.daily_usage.c.account_id == account_id)).scalar_one()


def fold_until_caught_up(database) -> None:
    """A fold reaches what was written before the previous one: two quiet folds in a row have folded everything."""
    quiet = 0
    while quiet < 2:
        with database.unit_of_work() as session:
            quiet = quiet + 1 if daily_usage.fold_new_entries(session) == 0 else 0


def test_two_folders_racing_with_writers_fold_every_entry_exactly_once(postgres_database):
    with postgres_database.unit_of_work() as session:
        accounts = [new_account(session, now=NOW) for _ in range(4)]
    stop = threading.Event()
    errors: list[BaseException] = []

    def folder():
        try:
            while not stop.is_set():
                with postgres_database.unit_of_work() as session:
                    daily_usage.fold_new_entries(session, limit=7)
        except BaseException as error:  # noqa: BLE001  (reported by the test)
            errors.append(error)

    folders = [threading.Thread(target=folder) for _ in range(2)]
    for thread in folders:
        thread.start()
    for n in range(120):
        with postgres_database.unit_of_work() as session:
            send(session, accounts[n % 4], f"m{n}", at=datetime(2021, 3, 1 + n % 28, tzinfo=UTC), usage=1000,
                 carrier_fee=5)
    stop.set()
    for thread in folders:
        thread.join()
    fold_until_caught_up(postgres_database)

    assert errors == []
    for account in accounts:
        assert stored_total(postgres_database, account) == 30 * 1005
        with postgres_database.read_only() as session:
            days = daily_usage.usage_by_day(session, account, **MARCH)
        assert sum(d.count for d in days if d.kind == "texts") == 30


def test_an_entry_committed_after_a_higher_one_is_folded_not_skipped(postgres_database):
    with postgres_database.unit_of_work() as session:
        early, late = new_account(session, now=NOW), new_account(session, now=NOW)
    with postgres_database.unit_of_work() as slow:
        # given an entry whose id is taken first and committed last
        number_fee(slow, early, at=datetime(2021, 3, 5, tzinfo=UTC), amount=700, period="2021-02")
        slow.flush()
        with postgres_database.unit_of_work() as session:
            send(session, late, "m1", at=datetime(2021, 3, 5, tzinfo=UTC), usage=1000)
        # when folders run while it is still in flight
        fold_until_caught_up(postgres_database)
        with postgres_database.read_only() as session:
            slow_id = slow.execute(select(func.max(Entry.id)).where(Entry.account_id == early)).scalar_one()
            folded = session.execute(select(daily_usage.folds.c.folded_through)).scalar_one()
        assert folded < slow_id
    fold_until_caught_up(postgres_database)

    # then both are folded, once each
    assert stored_total(postgres_database, early) == 700
    assert stored_total(postgres_database, late) == 1000
    with postgres_database.read_only() as session:
        assert daily_usage.usage_by_user(session, early, **MARCH) == {None: 700}
