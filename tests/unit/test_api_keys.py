"""Stored keys: digests only, scopes that only narrow, and a last use written at most once a minute."""

from datetime import UTC, datetime, timedelta

from sqlalchemy import select

from shared.api_keys import ACCOUNT, OPERATOR, find_live_key, hash_key, issue_key, may_mint, note_use, revoke_key
from shared.models import Account, ApiKey

T0 = datetime(2026, 11, 10, 12, 0, tzinfo=UTC)


def make_key(database) -> str:
    with database.unit_of_work() as session:
        session.add(Account(id="acct_1", name="Grace Church"))
        session.flush()
        return issue_key(session, "acct_1", name="billing server")


def last_used(database):
    with database.unit_of_work() as session:
        value = session.scalar(select(ApiKey.last_used_at))
    return value.replace(tzinfo=UTC) if value else None


def test_only_the_digest_and_a_short_prefix_are_stored(sqlite_database):
    key = make_key(sqlite_database)

    with sqlite_database.unit_of_work() as session:
        row = session.scalar(select(ApiKey))

    assert row.key_hash == hash_key(key) and key not in (row.key_hash, row.prefix, row.name)
    assert key.startswith(row.prefix) and len(row.prefix) == len("cq_live_") + 6


def test_a_key_mints_only_its_own_scope_or_narrower():
    assert may_mint(OPERATOR, ACCOUNT) and may_mint(OPERATOR, OPERATOR) and may_mint(ACCOUNT, ACCOUNT)
    assert not may_mint(ACCOUNT, OPERATOR)


def test_using_a_key_writes_its_last_use_at_most_once_a_minute(sqlite_database):
    # given a key never used
    key = make_key(sqlite_database)

    # when it authenticates now, 30 s later, and 61 s after the first use
    seen = []
    for at in (T0, T0 + timedelta(seconds=30), T0 + timedelta(seconds=61)):
        with sqlite_database.read_only() as session:
            live = find_live_key(session, key, now=at)
        assert live.account_id == "acct_1"
        if live.use_to_note:
            with sqlite_database.unit_of_work() as session:
                note_use(session, live.id, now=at)
        seen.append(last_used(sqlite_database))

    # then the second use within the minute wrote nothing
    assert seen == [T0, T0, T0 + timedelta(seconds=61)]


def test_a_revoked_key_does_not_authenticate(sqlite_database):
    key = make_key(sqlite_database)
    with sqlite_database.unit_of_work() as session:
        key_id = session.scalar(select(ApiKey.id))
        revoke_key(session, "acct_1", key_id, now=T0)

    with sqlite_database.unit_of_work() as session:
        assert find_live_key(session, key, now=T0) is None
