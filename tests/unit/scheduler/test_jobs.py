"""The calendar names only actors the workers declare, or the scheduler could not start."""

from scheduler.jobs import SAFETY_NETS, SCHEDULE, paced


def test_every_scheduled_job_enqueues_a_declared_actor(fake_broker):
    import workers  # noqa: F401  (declares the actors on the broker)

    assert {job.actor_name for job in SCHEDULE} <= set(fake_broker.actors)
    assert {"purge_idempotency_records", "fold_daily_usage"} <= {job.actor_name for job in SCHEDULE}


def test_the_sweep_interval_paces_every_safety_net_and_nothing_else():
    # Given CREDITQ_SWEEP_INTERVAL_SECONDS=2
    schedule = paced(SCHEDULE, 2)
    # Then every job that re-drives lost work runs every 2 s, and the calendar's other jobs keep their pace
    by_name = {job.name: job for job in schedule}
    assert set(SAFETY_NETS) <= set(by_name)
    assert all(by_name[name].trigger.interval.total_seconds() == 2 for name in SAFETY_NETS)
    assert [job for job in schedule if job.name not in SAFETY_NETS] == [
        job for job in SCHEDULE if job.name not in SAFETY_NETS]
    assert paced(SCHEDULE, None) == SCHEDULE
