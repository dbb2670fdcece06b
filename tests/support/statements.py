"""The SQL a test's code sends through SQLAlchemy, to check what ran and in which order."""

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import event

from shared.db import Database


@contextmanager
def statements_sent(database: Database) -> Iterator[list[str]]:
    """Each statement SQLAlchemy sends on the database's engine while the block runs, stripped and upper-cased.
    (Statements `shared.db.run` sends on psycopg's own cursor do not pass through SQLAlchemy.)"""
    sent: list[str] = []

    def record(conn, cursor, statement, *args):
        sent.append(statement.lstrip().upper())

    event.listen(database.engine, "before_cursor_execute", record)
    try:
        yield sent
    finally:
        event.remove(database.engine, "before_cursor_execute", record)
