"""POST /v1/admin/month-end: the operator runs the scheduler's month-end; dry runs write nothing."""

from datetime import UTC, datetime, timedelta

import pytest

from intake.app import init_app
from shared.api_keys import issue_key
from shared.billing.calendar import Period, last_ended
from shared.models import Account

OPERATOR = {"Authorization": "Bearer test-operator-key-0123456789"}


@pytest.fixture
async def client(aiohttp_client, settings, sqlite_database, fake_broker):
    return await aiohttp_client(init_app(settings, database=sqlite_database, broker=fake_broker))


@pytest.fixture
def account_key(sqlite_database) -> str:
    """A 100-credit monthly plan created two months ago; its last month has ended and is not closed."""
    with sqlite_database.unit_of_work() as session:
        created = datetime.now(UTC).replace(day=1) - timedelta(days=20)
        session.add(Account(id="acct_plan", name="Plan", timezone="UTC", plan_monthly_credits=100_000,
                            plan_cycle="monthly", status="active", balance=0, held=0, allocated=0, allocated_held=0,
                            created_at=created))
        session.flush()
        return issue_key(session, "acct_plan")


def _balance(database) -> int:
    with database.unit_of_work() as session:
        return session.get(Account, "acct_plan").balance


async def test_a_dry_run_reports_and_the_real_run_closes_once(client, account_key, sqlite_database):
    period = str(last_ended(datetime.now(UTC), "UTC"))

    dry = await client.post("/v1/admin/month-end", json={"period": period, "dry_run": True}, headers=OPERATOR)
    dry_body = await dry.json()
    assert dry.status == 200 and dry_body["dry_run"] is True and dry_body["credits"]["granted"] != "0"
    assert _balance(sqlite_database) == 0

    first = await (await client.post("/v1/admin/month-end", json={"period": period}, headers=OPERATOR)).json()
    second = await (await client.post("/v1/admin/month-end", json={"period": period}, headers=OPERATOR)).json()

    assert first["credits"]["granted"] == dry_body["credits"]["granted"]
    assert (second["closed"], second["already_closed"], second["credits"]["granted"]) == (0, 1, "0")
    assert _balance(sqlite_database) == 100_000


async def test_a_period_that_has_not_ended_closes_nothing(client, account_key):
    period = str(Period(datetime.now(UTC).year, datetime.now(UTC).month))

    body = await (await client.post("/v1/admin/month-end", json={"period": period}, headers=OPERATOR)).json()

    assert (body["closed"], body["not_ended"]) == (0, 1)


@pytest.mark.parametrize("payload", [{"period": "2026-13"}, {"period": 202611}, {}, {"period": "2026-11", "dry_run": "yes"}])
async def test_bad_input_is_a_422_problem(client, payload):
    response = await client.post("/v1/admin/month-end", json=payload, headers=OPERATOR)

    assert response.status == 422
    assert response.content_type == "application/problem+json"


async def test_an_account_key_may_not_run_month_end(client, account_key):
    response = await client.post("/v1/admin/month-end", json={"period": "2026-11"},
                                 headers={"Authorization": f"Bearer {account_key}"})

    assert response.status == 403
