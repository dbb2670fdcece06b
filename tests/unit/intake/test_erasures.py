"""POST /v1/erasures: the operator erases one number's data in every account; no account key may."""

from datetime import UTC, datetime

import pytest

from intake.app import init_app
from shared.api_keys import issue_key
from shared.models import Account, Message, OptOut

OPERATOR = {"Authorization": "Bearer test-operator-key-0123456789"}
ANN = "+14155550100"
NOW = datetime(2026, 11, 28, tzinfo=UTC)


@pytest.fixture
async def client(aiohttp_client, settings, sqlite_database, fake_broker):
    return await aiohttp_client(init_app(settings, database=sqlite_database, broker=fake_broker))


def seed(database) -> str:
    """Two accounts that texted Ann (one she asked to stop); the first account's key."""
    with database.unit_of_work() as session:
        for account_id in ("acct_1", "acct_2"):
            session.add(Account(id=account_id, name=account_id))
        session.flush()
        for n, account_id in enumerate(("acct_1", "acct_2")):
            session.add(Message(id=f"msg_{n}", account_id=account_id, to=ANN, from_="+14155550000", body="hi Ann",
                                status="delivered", created_at=NOW, updated_at=NOW))
        session.add(OptOut(account_id="acct_1", phone=ANN, source="stop_keyword"))
        return issue_key(session, "acct_1")


async def test_the_operator_erases_a_number_across_accounts_and_keeps_its_opt_out(client, sqlite_database):
    seed(sqlite_database)

    response = await client.post("/v1/erasures", headers=OPERATOR, json={"phone": ANN})

    assert response.status == 200
    assert await response.json() == {"phone": ANN, "messages": 2, "calls": 0, "in_flight": 0, "recipients": 0,
                                     "events": 0, "opt_outs_kept": 1}
    with sqlite_database.unit_of_work() as session:
        assert {(m.body, m.to) for m in session.query(Message)} == {("", "redacted")}


async def test_an_account_key_may_not_erase_even_its_own_recipients(client, sqlite_database):
    account_key = seed(sqlite_database)

    response = await client.post("/v1/erasures", headers={"Authorization": f"Bearer {account_key}"},
                                 json={"phone": ANN})

    assert response.status == 403
    with sqlite_database.unit_of_work() as session:
        assert {m.body for m in session.query(Message)} == {"hi Ann"}


@pytest.mark.parametrize("body", [{}, {"phone": "4155550100"}, {"phone": 14155550100}, {"phone": ANN, "all": True}])
async def test_a_bad_request_is_422_and_erases_nothing(client, sqlite_database, body):
    seed(sqlite_database)

    response = await client.post("/v1/erasures", headers=OPERATOR, json=body)

    assert response.status == 422 and response.content_type == "application/problem+json"
    with sqlite_database.unit_of_work() as session:
        assert {m.body for m in session.query(Message)} == {"hi Ann"}
