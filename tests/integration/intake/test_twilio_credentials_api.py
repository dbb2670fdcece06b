"""PUT /v1/accounts/{id}/twilio-credentials: credentials are proven with Twilio (the simulator) before they are kept."""

import pytest

from intake.app import init_app
from shared.api_keys import issue_key
from shared.config import load_settings
from shared.models import Account
from tests.support.ports import free_port
from tests.twilio_sim_fixtures import (  # noqa: F401  (fixtures)
    _simulator_server,
    background_loop,
    simulator,
)

PATH = "/v1/accounts/acct_own/twilio-credentials"


@pytest.fixture
def key(sqlite_database) -> dict:
    with sqlite_database.unit_of_work() as session:
        session.add(Account(id="acct_own", name="Grace Church"))
        session.flush()
        return {"Authorization": f"Bearer {issue_key(session, 'acct_own')}"}


def app_settings(tmp_path, simulator, api_base: str):  # noqa: F811
    return load_settings({"CREDITQ_DATA_DIR": str(tmp_path / "data"), "CREDITQ_ADMIN_KEY": "k" * 20,
                          "DATABASE_URL": f"sqlite:///{tmp_path / 'creditq.db'}", "TWILIO_API_BASE": api_base,
                          "TWILIO_ACCOUNT_SID": simulator.account_sid, "TWILIO_AUTH_TOKEN": simulator.auth_token})


@pytest.fixture
async def client(aiohttp_client, tmp_path, sqlite_database, fake_broker, simulator, key):  # noqa: F811
    settings = app_settings(tmp_path, simulator, simulator.url)
    return await aiohttp_client(init_app(settings, database=sqlite_database, broker=fake_broker))


def stored_credentials(database) -> tuple:
    with database.unit_of_work() as session:
        account = session.get(Account, "acct_own")
        return account.twilio_account_sid, account.twilio_auth_token


async def test_a_made_up_account_sid_is_refused_and_nothing_is_stored(client, key, sqlite_database):
    response = await client.put(PATH, headers=key, json={"account_sid": "AC" + "e" * 32, "auth_token": "chosen"})

    assert response.status == 422 and response.content_type == "application/problem+json"
    assert "account_sid" in (await response.json())["errors"]
    assert stored_credentials(sqlite_database) == (None, None)


async def test_another_accounts_sid_with_a_token_of_ones_choosing_is_refused(client, key, sqlite_database,
                                                                            simulator):  # noqa: F811
    # given a real subaccount (another tenant's), whose sid is known but whose token is not
    victim = simulator.add_account()

    for sid in (victim["sid"], simulator.account_sid):  # nor the deployment's own account
        response = await client.put(PATH, headers=key, json={"account_sid": sid, "auth_token": "chosen"})
        assert response.status == 422
    assert stored_credentials(sqlite_database) == (None, None)


async def test_a_suspended_twilio_account_is_refused(client, key, sqlite_database, simulator):  # noqa: F811
    suspended = simulator.add_account(status="suspended")

    response = await client.put(PATH, headers=key,
                                json={"account_sid": suspended["sid"], "auth_token": suspended["auth_token"]})

    assert response.status == 422 and "suspended" in (await response.json())["detail"]
    assert stored_credentials(sqlite_database) == (None, None)


async def test_a_subaccounts_own_credentials_are_proven_and_stored(client, key, sqlite_database,
                                                                  simulator):  # noqa: F811
    own = simulator.add_account()

    response = await client.put(PATH, headers=key, json={"account_sid": own["sid"], "auth_token": own["auth_token"]})
    kept = stored_credentials(sqlite_database)
    back = await client.put(PATH, headers=key, json={"account_sid": None, "auth_token": None})

    assert response.status == 200 and (await response.json())["account_sid"] == own["sid"]
    assert kept == (own["sid"], own["auth_token"])
    assert back.status == 200 and stored_credentials(sqlite_database) == (None, None)


async def test_when_twilio_cannot_answer_nothing_is_stored(aiohttp_client, tmp_path, sqlite_database, fake_broker,
                                                           simulator, key):  # noqa: F811
    # given Twilio is unreachable
    settings = app_settings(tmp_path, simulator, f"http://127.0.0.1:{free_port()}")
    client = await aiohttp_client(init_app(settings, database=sqlite_database, broker=fake_broker))
    own = simulator.add_account()

    response = await client.put(PATH, headers=key, json={"account_sid": own["sid"], "auth_token": own["auth_token"]})

    assert response.status == 503 and response.content_type == "application/problem+json"
    assert stored_credentials(sqlite_database) == (None, None)
