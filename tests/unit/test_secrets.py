"""Secrets at rest: the credential columns hold only Fernet tokens, and keys rotate without losing a value."""

from datetime import UTC, datetime

import pytest
from cryptography.fernet import Fernet
from sqlalchemy import text

from creditq.cli import main
from shared.billing import dunning_texts
from shared.ledger.accounts import Overdraft, create_account
from shared.messaging.credentials import set_twilio_credentials
from shared.models import Account, Base, IdempotencyRecord
from shared.secrets import WrongSecretKey, digest, digest_matches, rotate, use_keys

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
                                    plan_rollover="none", overdraft=Overdraft("prepaid"), low_balance_threshold=0,
                                    now=datetime.now(UTC))
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
                dunning_texts.site_of(session, None, "default").auth_token,
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


def test_a_value_written_under_the_old_key_reads_with_both_and_after_rotation_with_the_new_key_only(database, keys):
    # given secrets written under the old key
    keys(OLD)
    account_id = store_secrets(database)

    # when the new key is put first: everything still reads before the rotation
    keys(NEW, OLD)
    assert read_secrets(database, account_id) == PLAIN
    summary = rotate(database, Base.metadata)

    # then after it the new key alone reads everything, and the old one alone nothing
    assert (summary.re_encrypted, summary.already_current) == (3, 0)
    keys(NEW)
    assert read_secrets(database, account_id) == PLAIN
    keys(OLD)
    with pytest.raises(WrongSecretKey):
        read_secrets(database, account_id)


def test_rotating_again_changes_nothing(database, keys):
    # given secrets already rotated to the new key
    keys(OLD)
    account_id = store_secrets(database)
    keys(NEW, OLD)
    rotate(database, Base.metadata)
    rotated = stored(database)

    # when the rotation runs again
    summary = rotate(database, Base.metadata)

    # then it re-encrypts nothing and says so
    assert (summary.re_encrypted, summary.already_current) == (0, 3)
    assert stored(database) == rotated and read_secrets(database, account_id) == PLAIN
    assert summary.line() == ("secrets rotate: 0 values re-encrypted under the first key, 3 already were "
                              "(accounts.twilio_auth_token, idempotency_records.body, dunning_integrations.auth_token, "
                              "webhook_endpoints.secret)")


def test_rotation_walks_every_batch(database, keys):
    # given more accounts with their own tokens than one batch holds
    keys(OLD)
    ids = [new_account(database, f"Account {n}") for n in range(5)]
    with database.unit_of_work() as session:
        for n, account_id in enumerate(ids):
            set_twilio_credentials(session, account_id, SID, f"token-{n}", now=NOW)

    # when they are rotated two rows at a time
    keys(NEW, OLD)
    summary = rotate(database, Base.metadata, batch_size=2)

    # then every one was re-encrypted and reads under the new key alone
    assert summary.re_encrypted == 5
    keys(NEW)
    with database.unit_of_work() as session:
        assert [session.get(Account, account_id).twilio_auth_token for account_id in ids] == [
            f"token-{n}" for n in range(5)]


def test_rotation_without_the_key_a_value_was_written_under_stops_there(database, keys):
    # given secrets written under the old key; when the rotation runs with the new key alone
    keys(OLD)
    store_secrets(database)
    before = stored(database)
    keys(NEW)

    # then it refuses, naming the column, and the values are as they were
    with pytest.raises(WrongSecretKey, match=r"^accounts\.twilio_auth_token holds a value that no key"):
        rotate(database, Base.metadata)
    assert stored(database) == before


def test_a_keyed_digest_matches_under_any_key_of_the_ring_and_nowhere_else(keys):
    keys(OLD)
    under_old = digest(b"POST /v1/accounts {}")
    keys(NEW, OLD)
    assert digest(b"POST /v1/accounts {}") != under_old
    assert digest_matches(b"POST /v1/accounts {}", under_old)
    assert not digest_matches(b"POST /v1/accounts {\"x\": 1}", under_old)
    keys(NEW)
    assert not digest_matches(b"POST /v1/accounts {}", under_old)


def test_the_rotate_command_prints_one_line_and_refuses_a_wrong_or_missing_key_with_one(
        sqlite_database, keys, monkeypatch, capsys, tmp_path):
    # given secrets written under the old key, and a deployment configured with the new key first
    keys(OLD)
    account_id = store_secrets(sqlite_database)
    monkeypatch.setenv("CREDITQ_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("DATABASE_URL", sqlite_database.url)
    monkeypatch.setenv("CREDITQ_ADMIN_KEY", "test-operator-key-0123456789")

    # when the key is missing, or lacks the old key: one line, non-zero, nothing changed
    monkeypatch.delenv("CREDITQ_SECRET_KEY", raising=False)
    assert main(["secrets", "rotate"]) == 2
    monkeypatch.setenv("CREDITQ_SECRET_KEY", NEW)
    assert main(["secrets", "rotate"]) == 2
    refusals = capsys.readouterr()
    assert refusals.out == "" and len(refusals.err.splitlines()) == 2
    assert refusals.err.startswith("creditq: secrets rotate needs CREDITQ_SECRET_KEY")
    assert "no key of CREDITQ_SECRET_KEY decrypts" in refusals.err.splitlines()[1]
    assert NEW not in refusals.err

    # when it names both keys: one line of summary, and the new key alone reads everything
    monkeypatch.setenv("CREDITQ_SECRET_KEY", f"{NEW},{OLD}")
    assert main(["secrets", "rotate"]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "secrets rotate: 3 values re-encrypted under the first key, 0 already were (accounts.twilio_auth_token, "
        "idempotency_records.body, dunning_integrations.auth_token, webhook_endpoints.secret)"]
    keys(NEW)
    assert read_secrets(sqlite_database, account_id) == PLAIN
