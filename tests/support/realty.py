"""Fixtures of one account, Realty, with a sender number and a key, and the intake app over SQLite to call as it."""

import pytest

from intake.app import init_app
from shared.api_keys import issue_key
from shared.models import Account, PhoneNumber

SENDER = "+14155550199"


@pytest.fixture
def account_key(sqlite_database) -> str:
    with sqlite_database.unit_of_work() as session:
        session.add(Account(id="acct_1", name="Realty", balance=100_000))
        session.flush()
        session.add(PhoneNumber(account_id="acct_1", phone=SENDER, type="long_code"))
        return issue_key(session, "acct_1")


@pytest.fixture
async def client(aiohttp_client, settings, sqlite_database, fake_broker, account_key):
    return await aiohttp_client(init_app(settings, database=sqlite_database, broker=fake_broker))
