"""GET /v1/accounts/{id}/forecast and /advice, and a campaign's pre-flight, over the intake app."""

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import update

from shared.api_keys import issue_key
from shared.models import Account
from tests.support.realty import SENDER, account_key, client  # noqa: F401  (fixtures)
from tests.support.spending import send

CHICAGO = ZoneInfo("America/Chicago")


def spend_daily(database, days: int, credits_a_day: int) -> None:
    """Realty's last `days` local days, each with one text of `credits_a_day` sent at local noon. Days are counted
    on Chicago's calendar, not as 24 hours back from now: across a change of UTC offset, two of those could fall on
    one local day."""
    today = datetime.now(CHICAGO).date()
    first = today - timedelta(days=days)
    with database.unit_of_work() as session:  # created the day its history starts, at local midnight
        session.execute(update(Account).where(Account.id == "acct_1").values(
            timezone="America/Chicago",
            created_at=datetime(first.year, first.month, first.day, tzinfo=CHICAGO).astimezone(UTC)))
        for back in range(days, 0, -1):
            day = today - timedelta(days=back)
            at = datetime(day.year, day.month, day.day, 12, tzinfo=CHICAGO)
            send(session, "acct_1", f"msg_{back}", at=at, usage=credits_a_day * 1000)


def other_tenant(database) -> str:
    with database.unit_of_work() as session:
        session.add(Account(id="acct_2", name="Church", balance=50_000))
        session.flush()
        return issue_key(session, "acct_2")


async def test_the_forecast_says_when_the_credits_run_out_in_the_accounts_zone(client, sqlite_database, account_key):
    spend_daily(sqlite_database, 28, 2)  # 56 of its 100 credits spent, 2 a day: 22 days left

    response = await client.get("/v1/accounts/acct_1/forecast", headers={"Authorization": f"Bearer {account_key}"})

    assert response.status == 200
    forecast = await response.json()
    runs_out = datetime.fromisoformat(forecast["runs_out_at"])
    expected = datetime.now(CHICAGO).date() + timedelta(days=22)
    assert runs_out.utcoffset() == runs_out.astimezone(CHICAGO).utcoffset()  # told in Chicago's time
    assert abs((runs_out.astimezone(CHICAGO).date() - expected).days) <= 1
    assert (forecast["daily_rate"], forecast["confidence"], forecast["history_days"]) == ("2", "high", 28)
    assert forecast["recent_usage"]["texts"]["last_7_days"] == "14"
    assert forecast["scheduled_credits"] == "0" and forecast["auto_recharges_expected"] == 0


async def test_another_tenants_key_gets_404_for_the_forecast_and_the_advice(client, sqlite_database, account_key):
    stranger = other_tenant(sqlite_database)
    headers = {"Authorization": f"Bearer {stranger}"}

    forecast = await client.get("/v1/accounts/acct_1/forecast", headers=headers)
    advice = await client.get("/v1/accounts/acct_1/advice", headers=headers)
    own = await client.get("/v1/accounts/acct_2/advice", headers=headers)

    assert (forecast.status, advice.status, own.status) == (404, 404, 200)
    assert forecast.content_type == "application/problem+json"
    assert "acct_1" not in str(await own.json())


async def test_an_unknown_user_or_filter_is_refused(client, account_key):
    headers = {"Authorization": f"Bearer {account_key}"}

    unknown_user = await client.get("/v1/accounts/acct_1/forecast?user_id=user_nobody", headers=headers)
    unknown_filter = await client.get("/v1/accounts/acct_1/advice?period=2026-01", headers=headers)

    assert (unknown_user.status, unknown_filter.status) == (404, 422)
    assert (await unknown_filter.json())["errors"] == {"period": "is not a known field"}


async def test_a_prepaid_campaign_that_cannot_be_paid_is_refused_up_front_naming_where_it_would_stop(
        client, sqlite_database, account_key):
    recipients = [{"to": f"+1415555{n:04d}"} for n in range(100, 200)]  # 100 texts of 1 credit each
    with sqlite_database.unit_of_work() as session:  # 60 credits
        session.execute(update(Account).where(Account.id == "acct_1").values(balance=60_000))

    response = await client.post("/v1/campaigns", json={"name": "Open house", "from": SENDER, "body": "Hi",
                                                        "recipients": recipients},
                                 headers={"Authorization": f"Bearer {account_key}"})

    assert response.status == 402
    problem = await response.json()
    assert (problem["available"], problem["required"]) == ("60", "100")
    assert problem["stops_at"] == {"step": 0, "position": 60, "to": "+14155550160"}


async def test_an_overdraft_campaign_is_accepted_with_a_warning_where_the_balance_goes_below_zero(
        client, sqlite_database, account_key):
    recipients = [{"to": f"+1415555{n:04d}"} for n in range(100, 200)]
    with sqlite_database.unit_of_work() as session:
        session.execute(update(Account).where(Account.id == "acct_1")
                        .values(balance=60_000, overdraft_policy="overdraft", overdraft_limit=20_000))

    response = await client.post("/v1/campaigns", json={"name": "Open house", "from": SENDER, "body": "Hi",
                                                        "recipients": recipients},
                                 headers={"Authorization": f"Bearer {account_key}"})

    assert response.status == 202
    assert (await response.json())["estimate"]["warnings"] == [
        "the balance would go below zero at recipient 61 (+14155550160) of step 0: the rest is charged to the "
        "overdraft",
        "the overdraft limit would stop it at recipient 81 (+14155550180) of step 0: the rest parks until credits "
        "are added"]
