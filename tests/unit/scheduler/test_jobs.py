"""The calendar names only actors the workers declare, or the scheduler could not start."""

from scheduler.jobs import SCHEDULE


def test_every_scheduled_job_enqueues_a_declared_actor(fake_broker):
    import workers  # noqa: F401  (declares the actors on the broker)

    assert {job.actor_name for job in SCHEDULE} <= set(fake_broker.actors)
    assert {"purge_idempotency_records", "fold_daily_usage"} <= {job.actor_name for job in SCHEDULE}
