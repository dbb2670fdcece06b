"""The scheduler's daily redact_expired job redacts what CREDITQ_RETENTION_DAYS has expired, and nothing when unset."""

from datetime import UTC, datetime, timedelta

import pytest

from scheduler.jobs import SCHEDULE
from shared.models import Account, Message


@pytest.fixture
def old_message(sqlite_database):
    forty_days_ago = datetime.now(UTC) - timedelta(days=40)
    with sqlite_database.unit_of_work() as session:
        session.add(Account(id="acct_1", name="Grace"))
        session.flush()
        session.add(Message(id="msg_1", account_id="acct_1", to="+14155550100", from_="+14155550000", body="hi",
                            status="delivered", created_at=forty_days_ago, updated_at=forty_days_ago))


def run_job(database, retention_days):
    from workers import resources
    from workers.retention import redact_expired

    resources.use(resources.Resources(database=database, gateway_for=None, throttle=None,
                                      hold_ttl_seconds=900, stale_after=timedelta(seconds=60),
                                      retention_days=retention_days))
    try:
        redact_expired.fn()
    finally:
        resources.use(None)
    with database.unit_of_work() as session:
        message = session.get(Message, "msg_1")
        return message.body, message.to


@pytest.mark.parametrize(("retention_days", "left"), [(None, ("hi", "+14155550100")), (60, ("hi", "+14155550100")),
                                                      (30, ("", "redacted"))])
def test_the_job_follows_the_configured_retention(sqlite_database, enqueued, old_message, retention_days, left):
    assert run_job(sqlite_database, retention_days) == left


def test_the_scheduler_runs_it_daily():
    assert "redact_expired" in {job.actor_name for job in SCHEDULE}
