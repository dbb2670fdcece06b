"""The calendar names only actors the workers declare, or the scheduler could not start; a scheduler that takes the
lease runs its interval jobs at once."""

from datetime import UTC, datetime, timedelta

from apscheduler.schedulers.background import BackgroundScheduler

from scheduler.jobs import SAFETY_NETS, SCHEDULE, install_jobs, paced


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


def test_a_scheduler_taking_the_lease_runs_the_billing_tick_and_sweeps_now_and_the_daily_jobs_at_their_hour(
        fake_broker):
    import workers  # noqa: F401  (declares the actors on the broker)

    # given a standby that has just taken the lease
    scheduler = BackgroundScheduler(timezone="UTC")
    before = datetime.now(UTC)

    # when it installs the calendar
    install_jobs(scheduler, fake_broker, SCHEDULE)
    scheduler.start(paused=True)  # paused: nothing is enqueued, but each job knows its next run

    # then the billing tick and the sweeps are due now, not a minute later; the nightly retention keeps its hour
    due = {job.id: job.next_run_time for job in scheduler.get_jobs()}
    assert all(due[name] <= before + timedelta(seconds=5) for name in ("billing_tick", "sweep", "dunning_tick"))
    assert due["retention"].hour == 3
    scheduler.shutdown(wait=False)
