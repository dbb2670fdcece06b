"""What creditq keeps on disk is its owner's alone: the data dir 0700, the SQLite file and the key files 0600."""

import os
import stat
from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy import text

from shared.config import load_settings
from shared.db import Database
from shared.private_files import private_directory, written_once


def mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def permissive_umask():
    """The loosest umask a host may have: whatever creditq creates must still be private."""
    before = os.umask(0)
    yield
    os.umask(before)


def test_a_fresh_data_dir_and_its_generated_keys_are_private(tmp_path, permissive_umask):
    # given no data dir yet and no keys in the environment; when settings are loaded
    data_dir = tmp_path / "deep" / "data"
    settings = load_settings({"CREDITQ_DATA_DIR": str(data_dir)})

    # then the data dir (and the parent made for it) is 0700, each key file 0600 and holds the key in use
    assert mode(data_dir) == 0o700 and mode(data_dir.parent) == 0o700
    assert mode(data_dir / "admin_key") == 0o600 and mode(data_dir / "secret_key") == 0o600
    assert (data_dir / "admin_key").read_text().strip() == settings.admin_key
    assert (data_dir / "secret_key").read_text().strip() == settings.secret_keys[0]
    assert sorted(path.name for path in data_dir.iterdir()) == ["admin_key", "secret_key"]


def test_the_sqlite_file_and_its_wal_are_private(tmp_path, permissive_umask):
    # given no database file yet; when the engine opens it and writes
    path = tmp_path / "data" / "creditq.db"
    database = Database(f"sqlite:///{path}")
    try:
        with database.unit_of_work() as session:
            session.execute(text("CREATE TABLE t (x TEXT)"))
            session.execute(text("INSERT INTO t VALUES ('row')"))
        # then the file, its write-ahead log and its directory are the owner's alone
        assert mode(path.parent) == 0o700
        assert mode(path) == 0o600 and mode(path.with_name("creditq.db-wal")) == 0o600
    finally:
        database.dispose()


def test_an_existing_directory_keeps_the_mode_its_operator_chose(tmp_path):
    shared = tmp_path / "shared-with-backups"
    shared.mkdir(mode=0o750)
    shared.chmod(0o750)

    private_directory(shared / "data")

    assert mode(shared) == 0o750 and mode(shared / "data") == 0o700


def test_processes_racing_to_make_a_key_all_read_the_same_one(tmp_path):
    # given many first callers at once, each with its own candidate key
    path = tmp_path / "data" / "secret_key"
    candidates = iter(range(1000))

    with ThreadPoolExecutor(8) as pool:
        keys = list(pool.map(lambda _: written_once(path, lambda: f"key-{next(candidates)}"), range(32)))

    # then one key won, whole, and nothing else was left behind
    assert len(set(keys)) == 1 and keys[0].startswith("key-")
    assert [p.name for p in path.parent.iterdir()] == ["secret_key"] and mode(path) == 0o600
