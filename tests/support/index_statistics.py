"""PostgreSQL's own counts of how each index of a table was used: what tells which index served a statement."""

from sqlalchemy import text

from shared.db import Database

COUNTS = {column: text(f"SELECT indexrelname, {column} FROM pg_stat_user_indexes WHERE relname = :table")
          for column in ("idx_scan", "idx_tup_read")}


def index_counts(reader, table: str, column: str) -> dict[str, int]:
    """Each index of `table` by name, with its `column` of pg_stat_user_indexes (scans, or entries read) so far, as
    the statistics hold them now. The read's transaction ends with it: an open one would keep its snapshot of them,
    and could keep the dead index entries a test counts from being marked so."""
    counts = dict(reader.execute(COUNTS[column], {"table": table}).all())
    reader.rollback()
    return counts


def flush_statistics(connection) -> None:
    """The backend's pending counts go to the shared statistics as its transaction ends, before COMMIT's answer."""
    connection.execute(text("SELECT pg_stat_force_next_flush()"))
    connection.commit()


def entries_read(database_url: str, table: str, step) -> tuple[object, dict[str, int]]:
    """What `step(database)` answered, and the entries each index of `table` gave it. The step runs on a Database of
    one connection, that backend's counts flushed after it; another connection reads them before and after."""
    database = Database(database_url, pool_size=1)
    try:
        with database.engine.connect() as reader:
            before = index_counts(reader, table, "idx_tup_read")
            answer = step(database)
            with database.engine.connect() as stepped:  # the pool's one connection: the step's own backend
                flush_statistics(stepped)
            return answer, {name: count - before.get(name, 0)
                            for name, count in index_counts(reader, table, "idx_tup_read").items()}
    finally:
        database.dispose()
