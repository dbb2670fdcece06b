"""Engines and the unit of work: one transaction around each use case, on SQLite or PostgreSQL."""

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import Engine, create_engine, event, make_url
from sqlalchemy.orm import Session, sessionmaker

from shared.private_files import private_file


def make_engine(database_url: str, *, pool_size: int = 10) -> Engine:
    """SQLite gets WAL, a busy timeout and BEGIN IMMEDIATE so concurrent writers queue instead of failing.

    A SQLite file is created 0600 in a 0700 directory before SQLite opens it; its -wal and -shm files
    take the same mode from it."""
    if database_url.startswith("sqlite"):
        path = make_url(database_url).database
        if path and path != ":memory:":
            private_file(Path(path))
        engine = create_engine(database_url, connect_args={"timeout": 30, "check_same_thread": False})

        @event.listens_for(engine, "connect")
        def _sqlite_connect(dbapi_connection, _record):
            dbapi_connection.isolation_level = None  # let the "begin" hook below issue BEGIN
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.close()

        @event.listens_for(engine, "begin")
        def _sqlite_begin(connection):
            connection.exec_driver_sql("BEGIN IMMEDIATE")

        return engine
    # No pre-ping: it costs a round trip per transaction; a dropped connection fails one
    # transaction (retried by its caller, as every step is idempotent) and is then replaced.
    return create_engine(database_url, pool_size=pool_size, max_overflow=pool_size, pool_recycle=1800)


class Database:
    """Owns the engine and hands out units of work."""

    def __init__(self, database_url: str, *, pool_size: int = 10):
        self.url = database_url
        self.engine = make_engine(database_url, pool_size=pool_size)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        # PostgreSQL: the pool plus its overflow; SQLite queues writers anyway.
        self.max_connections = 2 * pool_size

    @property
    def is_postgres(self) -> bool:
        return self.engine.dialect.name == "postgresql"

    @contextmanager
    def unit_of_work(self) -> Iterator[Session]:
        """Commit when the block ends normally, roll back on any exception."""
        session = self._sessions()
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise
        finally:
            session.close()

    def dispose(self) -> None:
        self.engine.dispose()
