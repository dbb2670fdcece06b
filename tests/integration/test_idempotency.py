"""Stored Idempotency-Key answers on SQLite and PostgreSQL: stale claims taken over once, purged after 24 h."""

from datetime import UTC, datetime, timedelta

from sqlalchemy import select

from shared import idempotency
from shared.models import IdempotencyRecord

T0 = datetime(2026, 11, 10, 12, 0, tzinfo=UTC)
TIMEOUT = timedelta(seconds=60)


def keys_left(database) -> list[str]:
    with database.unit_of_work() as session:
        return sorted(session.scalars(select(IdempotencyRecord.key)))


def claim(database, key: str, at: datetime, request_hash: str = "h"):
    return idempotency.claim(database, "acct_1", key, request_hash, now=at, timeout=TIMEOUT)


def test_purge_removes_records_older_than_24_hours_in_batches_and_keeps_younger_ones(database):
    # given five answers from 25 hours ago and two from 23 hours ago
    now = T0 + timedelta(hours=25)
    for n in range(5):
        claim(database, f"old-{n}", T0)
        idempotency.record_answer(database, "acct_1", f"old-{n}", claimed_at=T0, status=201, body="{}")
    for n in range(2):
        claim(database, f"young-{n}", now - timedelta(hours=23))

    # when the purge runs two rows per batch
    purged = idempotency.purge(database, now=now, batch=2)

    # then only the young records are left
    assert purged == 5
    assert keys_left(database) == ["young-0", "young-1"]


def test_a_stale_claim_is_taken_over_by_one_retry_only(database):
    # given a claim at T0 whose process died
    assert claim(database, "k", T0) is None

    # when two retries come after the timeout, one after the other
    first = claim(database, "k", T0 + TIMEOUT + timedelta(seconds=1))
    second = claim(database, "k", T0 + TIMEOUT + timedelta(seconds=2))

    # then the first owns the key and the second sees a claim in progress, dated by the first retry
    assert first is None
    assert second.status == idempotency.IN_PROGRESS
    assert idempotency.retry_after(second, now=T0 + TIMEOUT + timedelta(seconds=2), timeout=TIMEOUT) \
        == timedelta(seconds=59)


def test_a_request_overtaken_after_the_timeout_records_nothing_over_its_successors_answer(database):
    # given a slow request claimed at T0, and a retry that took its key over after the timeout and answered
    claim(database, "k", T0)
    later = T0 + TIMEOUT + timedelta(seconds=1)
    assert claim(database, "k", later) is None
    idempotency.record_answer(database, "acct_1", "k", claimed_at=later, status=201, body='{"n": 2}')

    # when the slow request finally answers, or gives up
    idempotency.record_answer(database, "acct_1", "k", claimed_at=T0, status=201, body='{"n": 1}')
    idempotency.release(database, "acct_1", "k", claimed_at=T0)

    # then the successor's answer stands
    with database.unit_of_work() as session:
        record = session.get(IdempotencyRecord, ("acct_1", "k"))
        assert (record.status, record.body) == (201, '{"n": 2}')


def test_another_request_under_the_same_key_is_never_taken_for_a_stale_claim(database):
    claim(database, "k", T0, request_hash="first")

    holder = claim(database, "k", T0 + TIMEOUT * 2, request_hash="other")

    assert holder is not None and holder.request_hash == "first"


def test_the_scheduled_job_purges_what_is_older_than_a_day(sqlite_database, fake_broker):
    import workers  # noqa: F401  (declares the actors on the broker)
    from workers import resources
    from workers.idempotency import purge_idempotency_records

    # given an answer from 25 hours ago and one from an hour ago
    now = datetime.now(UTC)
    claim(sqlite_database, "yesterday", now - timedelta(hours=25))
    claim(sqlite_database, "today", now - timedelta(hours=1))
    resources.use(resources.Resources(database=sqlite_database, gateway_for=None, throttle=None,
                                      hold_ttl_seconds=900, stale_after=timedelta(minutes=1)))
    try:
        # when the scheduler's job runs
        purge_idempotency_records()
    finally:
        resources.use(None)

    # then only today's is kept
    assert keys_left(sqlite_database) == ["today"]
