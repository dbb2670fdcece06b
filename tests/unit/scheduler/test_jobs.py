"""The calendar names only actors the workers declare, or the scheduler could not start; a scheduler that takes the
lease runs its interval jobs at once."""

import logging
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import redis
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


class BrokerAwayOnce:
    """An actor whose first enqueue finds Redis away."""

    def __init__(self):
        self.sent = 0
        self.away = True

    def send(self):
        if self.away:
            self.away = False
            raise redis.exceptions.ConnectionError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")
        self.sent += 1


def test_a_run_with_the_broker_away_logs_one_line_and_the_next_run_enqueues(caplog):
    # given the calendar installed on a broker whose Redis is away for the first run
    actor = BrokerAwayOnce()
    broker = SimpleNamespace(get_actor=lambda name: actor)
    scheduler = BackgroundScheduler(timezone="UTC")
    install_jobs(scheduler, broker, [job for job in SCHEDULE if job.name == "sweep"])
    run = scheduler.get_job("sweep").func

    # when the sweep runs twice
    with caplog.at_level(logging.WARNING, logger="scheduler.jobs"):
        run()
        run()

    # then the first run says in one line why nothing was enqueued, and the second enqueues
    assert [record.getMessage() for record in caplog.records] == [
        "sweep not enqueued: the broker is away (Error 111 connecting to 127.0.0.1:6379. Connection refused.); "
        "the next run tries again"]
    assert caplog.records[0].exc_info is None
    assert actor.sent == 1
