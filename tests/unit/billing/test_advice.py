"""Plan advice: the seeds' story (300 credits expired three months running), and a plan too small."""

from datetime import datetime, timedelta
from types import SimpleNamespace
from zoneinfo import ZoneInfo

from sqlalchemy import select

from shared.billing import month_end
from shared.billing.advice import Cycle, advice_for, advise
from shared.billing.calendar import Period, period_end, period_start
from shared.billing.price_list import default_price_list
from shared.events.endpoints import create_endpoint
from shared.ledger import accounts, book
from shared.models import WebhookEvent
from shared.reporting import daily_usage
from tests.support.spending import send

CHICAGO = "America/Chicago"
JUNE = Period(2021, 6)


def test_an_account_that_let_300_credits_expire_three_months_running_is_advised_the_smaller_plan(sqlite_database):
    prices = default_price_list()
    with sqlite_database.unit_of_work() as session:
        # given a 1,000-credit monthly plan in Chicago that spends 700 a month (7 texts of 100) from June to August
        account, _ = accounts.create_account(
            session, name="Seeds", timezone=CHICAGO, plan_monthly_credits=0, plan_cycle="monthly",
            plan_rollover="none", overdraft=accounts.Overdraft("prepaid", 0), low_balance_threshold=0,
            now=period_start(JUNE, CHICAGO))
        account.plan_monthly_credits = 1_000_000
        for month in range(3):
            period = JUNE.shift(month)
            start = period_start(period, CHICAGO)
            book.grant(session, account.id, 1_000_000, "plan", granted_at=start, expires_at=period_end(period, CHICAGO),
                       idempotency_key=f"plan:{period}")
            for text in range(7):
                send(session, account.id, f"msg_{period}_{text}", at=start + timedelta(days=2 + text), usage=100_000)
        book.expire_lots(session, account.id, now=period_end(JUNE.shift(2), CHICAGO))
    with sqlite_database.unit_of_work() as session:
        daily_usage.fold_new_entries(session)

    # when advice is asked for in September
    with sqlite_database.read_only() as session:
        advice = advice_for(session, account.id, now=datetime(2021, 9, 3, tzinfo=ZoneInfo(CHICAGO)))

    # then each month shows 700 used and 300 expired, and the 750-credit plan would have cost least
    assert [(str(c.period), c.used, c.expired) for c in advice.cycles] == [
        ("2021-06", 700_000, 300_000), ("2021-07", 700_000, 300_000), ("2021-08", 700_000, 300_000)]
    assert advice.rollover_trend == "flat"
    assert (advice.current.kind, advice.current.monthly_credits) == ("plan", 1_000_000)
    assert (advice.recommended.kind, advice.recommended.monthly_credits) == ("plan", 750_000)
    saving = 3 * (prices.subscription(1_000_000).monthly_price_cents - prices.subscription(750_000).monthly_price_cents)
    assert advice.saving_cents == saving == 2400
    assert advice.changes


def test_an_account_that_buys_what_its_plan_lacks_every_month_is_advised_the_bigger_plan():
    prices = default_price_list()
    account = SimpleNamespace(id="acct", plan_monthly_credits=500_000, plan_rollover="none",
                              rollover_protection=False, credit_hold=False)
    cycles = [Cycle(JUNE.shift(n), 950_000, 0, 0) for n in range(3)]

    advice = advise(account, cycles, prices)

    # 450 credits short each month: a 500 bucket (2,250 cents), then four 100s with the 50 left over (4 x 500), then
    # a 500 bucket again, on top of the 500-credit plan's price
    assert advice.current.cost_cents == 3 * prices.subscription(500_000).monthly_price_cents + 2250 + 4 * 500 + 2250
    assert (advice.recommended.kind, advice.recommended.monthly_credits) == ("plan", 1_000_000)
    assert advice.saving_cents == advice.current.cost_cents - 3 * prices.subscription(1_000_000).monthly_price_cents


def test_month_end_tells_the_advice_in_its_summary_and_a_plan_advice_event(sqlite_database):
    with sqlite_database.unit_of_work() as session:
        # given the seeds' account on a 1,000-credit plan from June, with an endpoint that takes plan.advice
        account, _ = accounts.create_account(
            session, name="Seeds", timezone=CHICAGO, plan_monthly_credits=1_000_000, plan_cycle="monthly",
            plan_rollover="none", overdraft=accounts.Overdraft("prepaid", 0), low_balance_threshold=0,
            now=period_start(JUNE, CHICAGO))
        create_endpoint(session, account.id, url="https://hooks.example.com/creditq", events=["plan.advice"],
                        description=None, now=period_start(JUNE, CHICAGO))
    summaries = []
    for month in range(3):  # spending 700 a month, each month closed by month-end
        period = JUNE.shift(month)
        with sqlite_database.unit_of_work() as session:
            for text in range(7):
                send(session, account.id, f"msg_{period}_{text}", at=period_start(period, CHICAGO)
                     + timedelta(days=2 + text), usage=100_000)
        summaries.append(month_end.close_accounts(sqlite_database, [account.id], period,
                                                  now=period_end(period, CHICAGO) + timedelta(hours=1)))

    with sqlite_database.read_only() as session:
        events = list(session.scalars(select(WebhookEvent).where(WebhookEvent.type == "plan.advice")
                                      .order_by(WebhookEvent.created_at)))
    august = events[-1].data
    # then August's close advises the 750-credit plan, saving what the price list says, in the summary and the event
    assert (summaries[-1].expired, summaries[-1].advised, summaries[-1].advice_saving_cents) == (300_000, 1, 2400)
    assert [event.key for event in events] == [f"plan.advice:{account.id}:2021-0{m}" for m in (6, 7, 8)]
    assert august["recommended"] == {"kind": "plan", "monthly_credits": "750", "cost_cents": 9000}
    assert august["current"] == {"kind": "plan", "monthly_credits": "1000", "cost_cents": 11400}
    assert [cycle["expired"] for cycle in august["cycles"]] == ["300", "300", "300"]
    assert (august["saving_cents"], august["period"], august["changes"]) == (2400, "2021-08", True)


def test_month_end_counts_who_runs_out_before_the_next_month_end_and_tells_a_taker_its_date_a_year_ahead(
        sqlite_database):
    # given three prepaid accounts spending 20 credits a day through June: one bought 1,000 credits, two bought 3,000,
    # and one of those two has an endpoint that takes plan.advice
    june_first = period_start(JUNE, CHICAGO)
    ids = {}
    with sqlite_database.unit_of_work() as session:
        for name, bought in (("short", 1_000_000), ("long", 3_000_000), ("told", 3_000_000)):
            account, _ = accounts.create_account(
                session, name=name, timezone=CHICAGO, plan_monthly_credits=0, plan_cycle="monthly",
                plan_rollover="none", overdraft=accounts.Overdraft("prepaid", 0), low_balance_threshold=0,
                now=june_first)
            ids[name] = account.id
            book.grant(session, account.id, bought, "purchase", granted_at=june_first, idempotency_key=f"buy:{name}")
            for day in range(30):
                send(session, account.id, f"msg_{name}_{day}", at=june_first + timedelta(days=day, hours=12),
                     usage=20_000)
        create_endpoint(session, ids["told"], url="https://hooks.example.com/creditq", events=["plan.advice"],
                        description=None, now=june_first)

    # when June closes
    summary = month_end.close_accounts(sqlite_database, sorted(ids.values()), JUNE,
                                       now=period_end(JUNE, CHICAGO) + timedelta(hours=1))

    # then only the 400 credits left run out before July ends (in 20 days), and the taker's event says when its
    # 2,400 left run out: in October, past the next month-end
    assert summary.running_out == 1
    with sqlite_database.read_only() as session:
        [event] = session.scalars(select(WebhookEvent).where(WebhookEvent.type == "plan.advice")).all()
    runs_out = datetime.fromisoformat(event.data["runs_out_at"])
    assert (event.account_id, runs_out.year, runs_out.month) == (ids["told"], 2021, 10)
