"""Run-out forecasts on synthetic histories: the date is within a day of the true run-out, in the account's zone."""

from datetime import date, datetime, timedelta, timezone

import pytest

from shared.billing.forecasts import DailyModel, _SimLot, _Wallet, project
from shared.ledger.expiry import local_midnight, zone

CHICAGO = "America/Chicago"
NOW = datetime(2026, 3, 10, 18, tzinfo=timezone.utc)  # 13:00 in Chicago, a Tuesday
TODAY = date(2026, 3, 10)


def wallet(available: int, *, expiring: tuple[datetime, int] | None = None) -> _Wallet:
    lots = [_SimLot(id=1, user_id=None, kind="purchase", remaining=available, priority=30, granted_at=NOW,
                    expires_at=None)]
    if expiring is not None:
        at, credits = expiring
        lots = [_SimLot(id=2, user_id=None, kind="plan", remaining=credits, priority=10, granted_at=NOW,
                        expires_at=at), _SimLot(id=1, user_id=None, kind="purchase", remaining=available - credits,
                                                priority=30, granted_at=NOW, expires_at=None)]
    return _Wallet(available=available, lots=lots, plan_grants=[], protected=False, threshold=0, recharge=None)


def true_run_out(spending, available: int, sends=()) -> date:
    """The first local day by whose end the real spending (and the scheduled sends) used up `available`."""
    day, left = TODAY, available - sum(credits for at, credits in sends if at.date() < TODAY)
    while True:
        left -= spending(day) // 2 if day == TODAY else spending(day)  # half of today is still to come
        left -= sum(credits for at, credits in sends if at.astimezone(zone(CHICAGO)).date() == day)
        if left <= 0:
            return day
        day += timedelta(days=1)


def forecast_for(spending, available: int, *, days: int = 90, sends=(), expiring=None):
    history = [spending(TODAY - timedelta(days=days - offset)) for offset in range(days)]
    model = DailyModel(history, TODAY - timedelta(days=1))
    return project(model, wallet(available, expiring=expiring), now=NOW, timezone=CHICAGO,
                   today_spent=spending(TODAY) // 2, sends=sends)


def steady(day: date) -> int:
    return 40_000 + (3_000 if day.toordinal() % 2 else -3_000)  # 40 credits a day, give or take 3


def growing(day: date) -> int:
    return 20_000 + 1_000 * (day - date(2025, 12, 1)).days  # one credit a day more each day


def seasonal(day: date) -> int:
    return 5_000 if day.weekday() >= 5 else 80_000  # the office texts on weekdays only


@pytest.mark.parametrize("spending, available", [(steady, 1_000_000), (growing, 3_000_000), (seasonal, 700_000)],
                         ids=["steady", "growing", "seasonal"])
def test_the_run_out_date_is_within_a_day_of_the_true_one_in_the_accounts_time_zone(spending, available):
    forecast = forecast_for(spending, available)

    assert forecast.runs_out_at.tzinfo.key == CHICAGO
    assert abs((forecast.runs_out_at.date() - true_run_out(spending, available)).days) <= 1
    assert forecast.confidence == "high"


def test_a_campaign_scheduled_next_week_brings_the_run_out_forward_to_its_day():
    campaign = [(local_midnight(TODAY + timedelta(days=7), zone(CHICAGO)) + timedelta(hours=10), 500_000)]
    without = forecast_for(steady, 700_000)
    forecast = forecast_for(steady, 700_000, sends=campaign)

    assert forecast.scheduled_credits == 500_000
    assert forecast.runs_out_at.date() == TODAY + timedelta(days=7) == true_run_out(steady, 700_000, campaign)
    assert forecast.runs_out_at.hour == 10  # the campaign's first step takes the last credits
    assert without.runs_out_at.date() > forecast.runs_out_at.date()


def test_credits_expiring_unspent_are_listed_and_bring_the_run_out_forward():
    month_end = local_midnight(date(2026, 4, 1), zone(CHICAGO))
    forecast = forecast_for(steady, 2_000_000, expiring=(month_end, 1_500_000))

    # about 21.5 days of 40 credits burn 860 of the 1,500 plan credits first; the other 640 lapse at month-end
    [expiry] = forecast.expiring
    assert expiry.at == month_end and abs(expiry.credits - 640_000) <= 40_000  # within a day's spending
    assert forecast.runs_out_at.date() == true_run_out(steady, 2_000_000 - 640_000)


def test_a_short_or_erratic_history_says_so_and_no_spending_projects_nothing():
    erratic = forecast_for(lambda day: 200_000 if day.toordinal() % 5 == 0 else 0, 10_000_000)
    short = forecast_for(steady, 1_000_000, days=10)
    idle = forecast_for(lambda day: 0, 1_000_000)

    assert erratic.confidence == "low"
    assert short.confidence == "medium"
    assert (idle.confidence, idle.runs_out_at, idle.daily_rate) == ("none", None, 0)
