"""Daily usage: the ledger's spending entries folded per account, user, local day and kind, once each."""

from datetime import date, datetime, timezone

from shared.ledger import allocations, book
from shared.models import Entry
from shared.reporting import daily_usage
from shared.reporting.daily_usage import DailyUsage
from tests.support.spending import call, new_account, number_fee, send

UTC = timezone.utc
NOW = datetime(2021, 3, 1, tzinfo=UTC)


def fold_all(database) -> None:
    with database.unit_of_work() as session:
        daily_usage.fold_new_entries(session)


def test_texts_mms_calls_carrier_and_number_fees_are_folded_per_local_day_and_kind(sqlite_database):
    with sqlite_database.unit_of_work() as session:
        account = new_account(session, timezone="America/Los_Angeles", now=NOW)
        # 05:00 UTC on March 10 is still March 9 in Los Angeles
        send(session, account, "m1", at=datetime(2021, 3, 10, 5, tzinfo=UTC), usage=1000, carrier_fee=3)
        send(session, account, "m2", at=datetime(2021, 3, 10, 9, tzinfo=UTC), usage=1000, carrier_fee=3)
        send(session, account, "m3", at=datetime(2021, 3, 10, 9, tzinfo=UTC), usage=3000, mms=True)
        call(session, account, "call_01", at=datetime(2021, 3, 10, 9, tzinfo=UTC), usage=4000)
        number_fee(session, account, at=datetime(2021, 4, 1, 6, tzinfo=UTC), amount=1500, period="2021-03")

    fold_all(sqlite_database)

    with sqlite_database.read_only() as session:
        days = daily_usage.usage_by_day(session, account, since=date(2021, 3, 1), until=date(2021, 3, 31))
    assert days == [
        DailyUsage(date(2021, 3, 9), "carrier_fees", 3, 1),
        DailyUsage(date(2021, 3, 9), "texts", 1000, 1),
        DailyUsage(date(2021, 3, 10), "calls", 4000, 1),
        DailyUsage(date(2021, 3, 10), "carrier_fees", 3, 1),
        DailyUsage(date(2021, 3, 10), "mms", 3000, 1),
        DailyUsage(date(2021, 3, 10), "texts", 1000, 1),
        DailyUsage(date(2021, 3, 31), "other_fees", 1500, 1),  # 06:00 UTC on April 1 is 23:00 on March 31 there
    ]


def test_folding_again_adds_nothing_and_a_read_before_any_fold_is_already_exact(sqlite_database):
    with sqlite_database.unit_of_work() as session:
        account = new_account(session, now=NOW)
        send(session, account, "m1", at=datetime(2021, 3, 2, tzinfo=UTC), usage=1000)
    with sqlite_database.read_only() as session:
        before = daily_usage.usage_by_day(session, account, since=date(2021, 3, 1), until=date(2021, 3, 31))

    fold_all(sqlite_database)
    fold_all(sqlite_database)
    with sqlite_database.unit_of_work() as session:
        send(session, account, "m2", at=datetime(2021, 3, 2, tzinfo=UTC), usage=500)

    with sqlite_database.read_only() as session:
        after = daily_usage.usage_by_day(session, account, since=date(2021, 3, 1), until=date(2021, 3, 31))
    assert before == [DailyUsage(date(2021, 3, 2), "texts", 1000, 1)]
    assert after == [DailyUsage(date(2021, 3, 2), "texts", 1500, 2)]  # m1 folded once, m2 read from the entries


def test_small_batches_fold_to_the_same_totals_and_report_what_they_read(sqlite_database):
    with sqlite_database.unit_of_work() as session:
        account = new_account(session, now=NOW)
        for n in range(7):
            send(session, account, f"m{n}", at=datetime(2021, 3, 1 + n, tzinfo=UTC), usage=1000, carrier_fee=2)

    reads = []
    while not reads or reads[-1]:
        with sqlite_database.unit_of_work() as session:
            reads.append(daily_usage.fold_new_entries(session, limit=4))

    with sqlite_database.read_only() as session:
        days = daily_usage.usage_by_day(session, account, since=date(2021, 3, 1), until=date(2021, 3, 31))
        stored = session.query(daily_usage.daily_usage).count()
        written = session.query(Entry).count()
    assert sum(reads) == written and max(reads) == 4  # every entry read once, four at a time
    assert sum(d.millicredits for d in days if d.kind == "texts") == 7000
    assert sum(d.millicredits for d in days if d.kind == "carrier_fees") == 14
    assert stored == 14


def test_usage_by_user_splits_the_pool_from_each_users_own_spending(sqlite_database):
    with sqlite_database.unit_of_work() as session:
        account = new_account(session, now=NOW)
        agent = allocations.create_user(session, account, name="Agent", email="a@example.com", phone=None,
                                        role="admin", monthly_credits=None, now=NOW).id
        send(session, account, "m1", at=datetime(2021, 3, 2, tzinfo=UTC), usage=1000)
        send(session, account, "m2", at=datetime(2021, 3, 3, tzinfo=UTC), usage=2000, user_id=agent)
    fold_all(sqlite_database)
    with sqlite_database.unit_of_work() as session:
        send(session, account, "m3", at=datetime(2021, 3, 4, tzinfo=UTC), usage=500, user_id=agent)

    with sqlite_database.read_only() as session:
        by_user = daily_usage.usage_by_user(session, account, since=date(2021, 3, 1), until=date(2021, 3, 31))
        agents_days = daily_usage.usage_by_day(session, account, since=date(2021, 3, 1), until=date(2021, 3, 31),
                                               user_id=agent)
    assert by_user == {None: 1000, agent: 2500}
    assert agents_days == [DailyUsage(date(2021, 3, 3), "texts", 2000, 1),
                           DailyUsage(date(2021, 3, 4), "texts", 500, 1)]


def test_expired_credits_count_on_their_last_local_day_apart_from_spending(sqlite_database):
    with sqlite_database.unit_of_work() as session:
        account = new_account(session, timezone="America/Chicago", credits=0, now=NOW)
        # a plan lot that lapses at midnight starting April 1 in Chicago, 300 of its credits unspent
        book.grant(session, account, 1_000_000, "plan", granted_at=NOW, idempotency_key="plan",
                   expires_at=datetime(2021, 4, 1, 5, tzinfo=UTC))
        send(session, account, "m1", at=datetime(2021, 3, 15, 18, tzinfo=UTC), usage=700_000)
        book.expire_lots(session, account, now=datetime(2021, 4, 1, 6, tzinfo=UTC))
    fold_all(sqlite_database)

    with sqlite_database.read_only() as session:
        spending = daily_usage.usage_by_day(session, account, since=date(2021, 3, 1), until=date(2021, 4, 30))
        expired = daily_usage.daily_totals(session, [account], since_by_account={account: date(2021, 3, 1)},
                                           kinds=(daily_usage.EXPIRED,))
    assert spending == [DailyUsage(date(2021, 3, 15), "texts", 700_000, 1)]
    assert expired == {account: {date(2021, 3, 31): 300_000}}


def test_daily_totals_sums_each_accounts_days_from_its_own_start_folded_or_not(database):
    # given two accounts spending on three days, the last day's texts not folded yet
    with database.unit_of_work() as session:
        early, late = (new_account(session, timezone="UTC", credits=100_000, now=NOW) for _ in range(2))
        for account in (early, late):
            for day, usage in ((1, 1_000), (2, 2_000), (2, 500)):
                send(session, account, f"{account}-{day}-{usage}", at=datetime(2021, 3, day, 12, tzinfo=UTC),
                     usage=usage)
    fold_all(database)
    with database.unit_of_work() as session:
        send(session, early, "unfolded", at=datetime(2021, 3, 3, 12, tzinfo=UTC), usage=4_000)

    # when the batch's totals are read, the late account only from March 2
    with database.read_only() as session:
        totals = daily_usage.daily_totals(session, [early, late], since_by_account={
            early: date(2021, 3, 1), late: date(2021, 3, 2)})

    # then each day is the sum of its texts, from each account's own start, the unfolded one included
    assert totals == {early: {date(2021, 3, 1): 1_000, date(2021, 3, 2): 2_500, date(2021, 3, 3): 4_000},
                      late: {date(2021, 3, 2): 2_500}}
