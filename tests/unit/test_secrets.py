"""Secrets at rest: the credential columns hold only Fernet tokens under the deployment key."""

from datetime import UTC, datetime

import pytest
from cryptography.fernet import Fernet
from sqlalchemy import text

from shared.billing import dunning_texts
from shared.ledger.accounts import Overdraft, create_account
from shared.messaging.credentials import set_twilio_credentials
from shared.models import Account, DunningIntegration, IdempotencyRecord
from shared.secrets import digest, digest_matches, use_keys

NOW = datetime(2026, 11, 3, 12, 0, tzinfo=UTC)
OLD, NEW = Fernet.generate_key().decode(), Fernet.generate_key().decode()
SID = "AC" + "1" * 32


@pytest.fixture
def keys(secret_keys):
    """Switch the process's keys within a test; the session's come back afterwards."""
    yield lambda *ring: use_keys(list(ring))
    use_keys(secret_keys)


def new_account(database, name="Grace Church") -> str:
    with database.unit_of_work() as session:
        account, _ = create_account(session, name=name, timezone="UTC", plan_monthly_credits=0, plan_cycle="monthly",
                                    plan_rollover="none", overdraft=Overdraft("prepaid"), low_balance_threshold=0)
        return account.id


def store_secrets(database) -> str:
    """An account's own auth token, a dunning site's, and an answer holding an API key."""
    account_id = new_account(database)
    with database.unit_of_work() as session:
        set_twilio_credentials(session, account_id, SID, "account-token", now=NOW)
        dunning_texts.set_integration(session, "default", account_sid=SID, auth_token="site-token",
                                      from_number="+15005550006", now=NOW)
        session.add(IdempotencyRecord(principal="operator", key="create-1", request_hash="0" * 64, status=201,
                                      body='{"api_key": "cq_live_secret"}'))
    return account_id


def read_secrets(database, account_id) -> tuple:
    with database.unit_of_work() as session:
        return (session.get(Account, account_id).twilio_auth_token,
                session.get(DunningIntegration, "default").auth_token,
                session.get(IdempotencyRecord, ("operator", "create-1")).body)


def stored(database) -> list[str]:
    """Every encrypted column's value as the database holds it."""
    with database.engine.connect() as connection:
        return [value for query in ("SELECT twilio_auth_token FROM accounts WHERE twilio_auth_token IS NOT NULL "
                                    "ORDER BY id", "SELECT auth_token FROM dunning_integrations",
                                    "SELECT body FROM idempotency_records")
                for value in connection.execute(text(query)).scalars()]


PLAIN = ("account-token", "site-token", '{"api_key": "cq_live_secret"}')


def test_secrets_are_stored_as_tokens_that_differ_on_every_write(database):
    # given secrets saved through the model, and a second account saving the very same token
    account_id = store_secrets(database)
    twin_id = new_account(database, "Harbor Realty")
    with database.unit_of_work() as session:
        set_twilio_credentials(session, twin_id, SID, "account-token", now=NOW)

    # then the code reads plain strings while the database holds only Fernet tokens, fresh on each write
    assert read_secrets(database, account_id) == PLAIN
    values = stored(database)
    assert len(values) == 4 and not any(plain in value for value in values for plain in PLAIN)
    assert all(value.startswith("gAAAAA") for value in values)
    assert values[0] != values[1]  # the same token, two ciphertexts: nothing can look it up by value


def test_a_keyed_digest_matches_under_any_key_of_the_ring_and_nowhere_else(keys):
    keys(OLD)
    under_old = digest(b"POST /v1/accounts {}")
    keys(NEW, OLD)
    assert digest(b"POST /v1/accounts {}") != under_old
    assert digest_matches(b"POST /v1/accounts {}", under_old)
    assert not digest_matches(b"POST /v1/accounts {\"x\": 1}", under_old)
    keys(NEW)
    assert not digest_matches(b"POST /v1/accounts {}", under_old)
