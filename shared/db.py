"""Engines and the unit of work: one transaction around each use case, on SQLite or PostgreSQL.

Writers and readers take different transactions on SQLite. A unit of work begins IMMEDIATE, so
concurrent writers queue on the busy timeout instead of failing half-way; a read (`read_only`)
begins DEFERRED and, in WAL mode, reads its snapshot without ever waiting for the write lock, so a
long write never stalls other tenants' reads or `/healthz`. Bulk writes (imports, campaign
recipients) are cut into short units of work of their own, so a writer queued behind one waits for
a chunk, not for the whole.

A unit of work that is exactly one ledger call (`one_statement`) needs no Session: on PostgreSQL it runs
in autocommit, so the call is its own transaction, with no BEGIN nor COMMIT round trip and the hot
account's row lock released as the statement ends rather than after Python has read the result.
"""

import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
from psycopg.rows import namedtuple_row
from psycopg.types.json import set_json_dumps
from sqlalchemy import (
    Connection,
    Engine,
    Executable,
    Table,
    any_,
    bindparam,
    create_engine,
    event,
    extract,
    func,
    make_url,
)
from sqlalchemy import exc as sql_errors
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, sessionmaker

from shared import fast_json
from shared.private_files import private_file

SQLITE_BUSY_TIMEOUT_MS = 30_000  # a writer waits this long for the write lock before "database is locked"
SQLITE_LONGEST_RETRY_SECONDS = 0.1  # SQLite's busy handler sleeps at most this long between two tries
_READ_ONLY = "creditq_read_only"  # execution option of a read_only() session's connection


def make_engine(database_url: str, *, pool_size: int = 10, generic_plans: bool = False) -> Engine:
    """SQLite gets WAL, a busy timeout, BEGIN IMMEDIATE for writers and BEGIN for reads, so concurrent
    writers queue instead of failing and readers never wait for them. `generic_plans`: see Database.for_batches
    (PostgreSQL only).

    A SQLite file is created 0600 in a 0700 directory before SQLite opens it; its -wal and -shm files
    take the same mode from it."""
    if database_url.startswith("sqlite"):
        path = make_url(database_url).database
        if path and path != ":memory:":
            private_file(Path(path))
        # a connection for each thread, as on PostgreSQL: SQLAlchemy's default of 5 (+10 overflow) made the 16th
        # worker thread wait for a connection, not for SQLite's lock
        engine = create_engine(database_url, pool_size=pool_size, max_overflow=pool_size,
                               connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000, "check_same_thread": False})

        @event.listens_for(engine, "connect")
        def _sqlite_connect(dbapi_connection, _record):
            dbapi_connection.isolation_level = None  # let the "begin" hook below issue BEGIN
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
            cursor.close()

        @event.listens_for(engine, "begin")
        def _sqlite_begin(connection):
            read_only = connection.get_execution_options().get(_READ_ONLY, False)
            info = connection.connection.info  # lives as long as the pooled connection
            if info.get(_READ_ONLY, False) != read_only:  # a write in a read fails instead of being dropped
                connection.exec_driver_sql(f"PRAGMA query_only={int(read_only)}")
                info[_READ_ONLY] = read_only
            connection.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")

        return engine
    # No pre-ping: it costs a round trip per transaction; a dropped connection fails one
    # transaction (retried by its caller, as every step is idempotent) and is then replaced.
    # `pool_size` is the number of threads using the engine, each holding one session at a time: they all keep a
    # connection, so none is opened under load. The overflow serves only a thread that holds two sessions at once;
    # such a connection is closed when given back.
    # JSON columns are read by orjson (psycopg parses them; a campaign chunk reads 1,000 recipients' fields).
    options = {}
    if generic_plans:  # beside the server options the URL gives (?options=...) or else PGOPTIONS, which libpq would
        # no longer read once `options` is given
        given = make_url(database_url).query.get("options") or os.environ.get("PGOPTIONS", "")
        options["connect_args"] = {"options": " ".join(filter(None, [*(given if isinstance(given, tuple) else [given]),
                                                                     "-c plan_cache_mode=force_generic_plan"]))}
    return create_engine(database_url, pool_size=pool_size, max_overflow=pool_size, pool_recycle=1800,
                         json_deserializer=fast_json.loads, **options)


def run(connection: Connection, statement: Executable, parameters: dict | None = None):
    """`connection.execute(statement, parameters)` for the prebuilt statements of the hot paths (claim, sid,
    status reports, settlement, their events). On PostgreSQL the statement is compiled once and run on psycopg's
    own cursor, prepared at first use: SQLAlchemy's per-call machinery (cache key, execution context, result
    metadata) cost more client CPU than psycopg's execute itself, about 70 µs a statement. Errors are SQLAlchemy's,
    as they would be. Elsewhere, or when a parameter or a column needs SQLAlchemy's processing, it is that very call.
    The answer has CursorResult's one(), one_or_none(), first(), all(), scalar(), scalar_one_or_none() and
    rowcount, and nothing more (SQLite's answer is a CursorResult: use no other method, or both must offer it).
    `statement` is built once, not per call: the compiled form is kept by the statement."""
    plan = _plan_of(statement, connection.dialect) if connection.dialect.name == "postgresql" else None
    if plan is None:
        return connection.execute(statement, parameters or {})
    with prepared(connection, plan.sql, plan.values(parameters or {})) as cursor:
        columns = cursor.pgresult.nfields  # not `description`, which builds a Column object per column each time
        rows = cursor.fetchall() if columns else []
        rowcount = cursor.rowcount
    if plan.processors:
        assert len(plan.processors) == columns, plan.sql
        rows = [row._make([value if process is None else process(value)
                           for process, value in zip(plan.processors, row)]) for row in rows]
    return _Rows(rows, rowcount)


@contextmanager
def prepared(connection: Connection, sql: str, parameters, *, row_factory=namedtuple_row) -> Iterator[psycopg.Cursor]:
    """`sql`, in psycopg's parameter style, run on the driver's own cursor of the connection (PostgreSQL), prepared on
    the server from its first use there, errors raised as SQLAlchemy's: the cursor, to read its answer from."""
    with sqlalchemy_errors(connection, sql, parameters), \
            connection.connection.driver_connection.cursor(row_factory=row_factory) as cursor:
        cursor.execute(sql, parameters, prepare=True)
        yield cursor


@contextmanager
def sqlalchemy_errors(connection: Connection, sql: str, parameters) -> Iterator[None]:
    """Around a statement run on psycopg's own cursor: its errors raised as SQLAlchemy's (what callers catch, e.g.
    the intake's 503 while the database is away), and a connection that died invalidated, as SQLAlchemy does, so
    the unit of work's rollback does not try it again and the pool opens a fresh one; with it every connection the
    pool opened before it (a restarted server cut them all), so a pool meets a dead connection once, not once each."""
    try:
        yield
    except psycopg.Error as error:
        invalidated = connection.dialect.is_disconnect(error, connection.connection.dbapi_connection, None)
        if invalidated:  # as SQLAlchemy does for its own statements: the pool's older connections were cut off too
            connection.engine.pool._invalidate(connection.connection, error)
            connection.invalidate(error)
        raise sql_errors.DBAPIError.instance(sql, parameters, error, psycopg.Error,
                                             connection_invalidated=invalidated) from error


class _Plan:
    """A statement compiled for PostgreSQL once, when psycopg can take it as it is; `processors`: what a SELECT's
    column types do to the values read (an encrypted column's decryption), None when none does anything."""

    def __init__(self, compiled, processors: list | None):
        self.compiled, self.sql, self.processors = compiled, compiled.string, processors
        self.defaults = compiled.construct_params(_check=False)  # the values written into the statement
        self.required = frozenset(name for bind, name in compiled.bind_names.items() if bind.required)

    def values(self, parameters: dict) -> dict:
        """The statement's parameters: SQLAlchemy's construct_params, for the common case without its cost (it
        runs, and raises as it would, when a required parameter is missing)."""
        if self.required <= parameters.keys():
            return {**self.defaults, **parameters}
        return self.compiled.construct_params(parameters)

    @classmethod
    def of(cls, statement: Executable, dialect) -> "_Plan | None":
        compiled = statement.compile(dialect=dialect)
        try:
            processors = [type_._cached_result_processor(dialect, None) for *_, type_ in compiled._result_columns]
        except TypeError:  # a type whose processing depends on the column's type code (Numeric): SQLAlchemy's
            return None
        writes = compiled.isinsert or compiled.isupdate or compiled.isdelete
        if compiled._bind_processors or (writes and any(processors)):
            return None
        if compiled.literal_execute_params or compiled.post_compile_params:  # expanded at each call
            return None
        if compiled.insert_prefetch or compiled.update_prefetch:  # Python-side defaults: SQLAlchemy's to fill
            return None
        if compiled.escaped_bind_names:  # parameter names rewritten in the SQL: construct_params maps them
            return None
        return cls(compiled, processors if any(processors) else None)


class _Rows:
    """What a statement answered, as CursorResult offers it to the hot paths."""

    def __init__(self, rows: list, rowcount: int):
        self._rows, self.rowcount = rows, rowcount

    def all(self) -> list:
        return self._rows

    def first(self):
        return self._rows[0] if self._rows else None

    def one_or_none(self):
        if len(self._rows) > 1:
            raise sql_errors.MultipleResultsFound("Multiple rows were found when one or none was required")
        return self.first()

    def one(self):
        if len(self._rows) != 1:
            raise (sql_errors.NoResultFound("No row was found when one was required") if not self._rows else
                   sql_errors.MultipleResultsFound("Multiple rows were found when exactly one was required"))
        return self._rows[0]

    def scalar(self):
        return self._rows[0][0] if self._rows else None

    def scalar_one_or_none(self):
        row = self.one_or_none()
        return None if row is None else row[0]


def _plan_of(statement: Executable, dialect) -> "_Plan | None":
    """The statement's plan, made at its first run; None when SQLAlchemy must run it."""
    plan = _plans.get(statement, _UNSEEN)
    if plan is not _UNSEEN:
        return plan
    plan = _Plan.of(statement, dialect)
    if len(_plans) < MAX_PLANS:  # past it, statements are being built per call: those are SQLAlchemy's to cache
        _plans[statement] = plan
    return plan


_plans: dict = {}  # statement -> its _Plan, or None
_UNSEEN = object()
MAX_PLANS = 512  # the hot paths' statements are built once (module constants, cached builders): a few dozen


def copy_rows(session: Session, table: Table, rows: list[dict]) -> None:
    """Insert many rows in the session's transaction: COPY on PostgreSQL, executemany on SQLite.

    COPY parses no statement and streams the rows in one round trip; for a campaign chunk's 1,000
    holds and messages it took half the time of psycopg's pipelined executemany of one prepared
    statement, and a quarter of SQLAlchemy's multi-VALUES pages. Its binary format, with each column's
    type read from the database, costs the client a quarter of the CPU of the text format. Rows are keyed
    by column name, their values ones psycopg adapts as they are (aware datetimes), dicts and lists for JSON
    columns; a duplicate key fails the whole COPY.
    """
    if not rows:
        return
    connection = session.connection()
    if connection.dialect.name != "postgresql":
        connection.execute(table.insert(), rows)
        return
    names = list(rows[0])
    quote = connection.dialect.identifier_preparer.quote
    types = _column_types(connection, table)
    with connection.connection.driver_connection.cursor() as cursor:
        set_json_dumps(fast_json.dumps, cursor)
        with cursor.copy(f"COPY {quote(table.name)} ({', '.join(quote(name) for name in names)}) "
                         "FROM STDIN (FORMAT BINARY)") as copy:
            copy.set_types([types[name] for name in names])
            for row in rows:
                copy.write_row([row[name] for name in names])


def _column_types(connection: Connection, table: Table) -> dict[str, int]:
    """The type oid of each of the table's columns, as the database has them now (binary COPY must name them
    exactly): read at every COPY, one catalog lookup, so a migration that changed a column's type is seen at once."""
    return dict(connection.exec_driver_sql(
        "SELECT attname, atttypid::int FROM pg_attribute WHERE attrelid = %(table)s::regclass AND attnum > 0"
        " AND NOT attisdropped", {"table": connection.dialect.identifier_preparer.quote(table.name)}).all())


def dialect_name(session: Session | Connection) -> str:
    """A unit of work's database, or a lone call's (`Database.one_statement`)."""
    return (session if isinstance(session, Connection) else session.get_bind()).dialect.name


def epoch_seconds(session: Session | Connection) -> Callable:
    """A timestamp as seconds, in SQL: the arithmetic both databases do alike (SQLite's to the millisecond)."""
    if dialect_name(session) == "postgresql":
        return lambda timestamp: extract("epoch", timestamp)
    return lambda timestamp: func.julianday(timestamp) * 86_400


def insert_on_conflict(session: Session | Connection, table):
    """INSERT that understands ON CONFLICT (do nothing, do update) on both databases."""
    dialect = postgresql if dialect_name(session) == "postgresql" else sqlite
    return dialect.insert(table)


def any_of_parameter(column, name: str, dialect: str):
    """`column IN :name` for a prebuilt statement, run with a list: on PostgreSQL `= ANY(:name)`, one untyped array
    parameter (psycopg sends the list as it is), so the text is the same, and prepared once, whatever the list's
    length; elsewhere an expanding IN."""
    if dialect == "postgresql":
        return column == any_(bindparam(name))
    return column.in_(bindparam(name, expanding=True))


def any_of(session: Session | Connection, column, values: list):
    """`column IN values`; on PostgreSQL `= ANY(array)`: one parameter, so the statement is the same (and prepared
    once) whatever the number of values, and no bound-parameter limit applies."""
    if dialect_name(session) == "postgresql":
        return column == any_(bindparam("values", values, type_=postgresql.ARRAY(column.type)))
    return column.in_(values)


@contextmanager
def read_only_session(sessions: Callable[[], Session]) -> Iterator[Session]:
    """A read-only transaction from `sessions` (a sessionmaker, or a Session class bound to an engine): on SQLite it
    neither takes nor waits for the write lock; on PostgreSQL it is BEGIN READ ONLY (psycopg sends it with the first
    statement: no extra round trip). A write in it fails (it is never silently dropped); nothing is committed."""
    session = sessions()
    try:
        postgres = session.get_bind().dialect.name == "postgresql"
        session.connection(execution_options={_READ_ONLY: True, **({"postgresql_readonly": True} if postgres else {})})
        yield session
    finally:
        session.close()


class ConnectionWork:
    """A unit of work as a Core connection in a transaction, for the hot steps that run prebuilt statements.
    `session`, an ORM Session in that same transaction, is made the first time a branch asks for it: making and
    committing one costs more client CPU (about 0.2 ms) than the statements of a common send step."""

    def __init__(self, connection: Connection, sessions: Callable[..., Session]):
        self.connection = connection
        self._sessions = sessions
        self._session: Session | None = None

    @property
    def session(self) -> Session:
        if self._session is None:
            # joined to the connection's transaction: its commit flushes, only the connection's commits
            self._session = self._sessions(bind=self.connection)
        return self._session

    def __enter__(self) -> "ConnectionWork":
        return self

    def __exit__(self, error_type, _error, _traceback) -> None:
        """The session, if one was made: flushed by its commit when the block ended normally; closed."""
        if self._session is None:
            return
        try:
            if error_type is None:
                self._session.commit()
        finally:
            self._session.close()


class Database:
    """Owns the engine and hands out units of work (writes) and read-only sessions."""

    def __init__(self, database_url: str, *, pool_size: int = 10, generic_plans: bool = False):
        """`pool_size`: the threads that will use it, each keeping a connection. `generic_plans`: see for_batches."""
        self.url = database_url
        self.engine = make_engine(database_url, pool_size=pool_size, generic_plans=generic_plans)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    @contextmanager
    def for_batches(self, pool_size: int) -> Iterator["Database"]:
        """On PostgreSQL, a database of its own for the web's group commits (the intake's accepts, the status
        callbacks): a pool of `pool_size` connections, one for each of their writers, whose sessions run every
        prepared statement on its generic plan (`plan_cache_mode`), not on a plan made for each execution's values.
        Elsewhere this database itself. Disposed of when the block ends.

        A batch's statements (the intake's facts for a union of one row per message, the status callbacks' lists of
        sids and ids) were planned afresh at every execution: their custom plans' estimates know the values (the
        padding rows that join nothing, the length of a list), so PostgreSQL never settled on the generic plan, and
        planning the facts of 64 messages took longer than running them. The generic plans look the rows up by key
        as the custom ones do. Set for the connection, not with `SET LOCAL` in each transaction: that was a round
        trip more a batch, and the other statements of the web keep their custom plans."""
        if not self.is_postgres:
            yield self
            return
        batches = Database(self.url, pool_size=pool_size, generic_plans=True)
        try:
            yield batches
        finally:
            batches.dispose()

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

    @contextmanager
    def connection_unit_of_work(self) -> Iterator[ConnectionWork]:
        """unit_of_work for a step that mostly runs Core statements (ConnectionWork): commit when the block ends
        normally, what its session holds flushed first; roll back on any exception."""
        with self.engine.begin() as connection, ConnectionWork(connection, self._sessions) as work:
            yield work

    @contextmanager
    def one_statement(self) -> Iterator[Connection]:
        """A unit of work that is one statement, e.g. a lone `book.reserve` or `book.settle`: a Core connection.

        PostgreSQL: autocommit, the statement is its own transaction (a ledger function that must write an
        expiry first opens a transaction of its own for that). SQLite: a write transaction, committed when
        the block ends normally.
        """
        if not self.is_postgres:
            with self.engine.begin() as connection:
                yield connection
            return
        with self.engine.connect() as connection:
            yield connection.execution_options(isolation_level="AUTOCOMMIT")

    @contextmanager
    def read_only(self) -> Iterator[Session]:
        """A read-only transaction: on SQLite it neither takes nor waits for the write lock. A write in it
        fails (it is never silently dropped); nothing is committed."""
        with read_only_session(self._sessions) as session:
            yield session

    def yield_to_writers(self) -> None:
        """Between two units of work of a bulk write: on SQLite, leave the write lock free for a moment.

        SQLite's busy handler is not fair: a writer waiting for the lock sleeps up to 100 ms between
        tries, and a loop that begins its next chunk the moment it commits starved such a writer (another
        tenant's key lookup, a message) for seconds. A pause as long as that sleep lets every waiting
        writer in. PostgreSQL locks rows, not the database: no pause.
        """
        if not self.is_postgres:
            time.sleep(SQLITE_LONGEST_RETRY_SECONDS)

    def dispose(self) -> None:
        self.engine.dispose()
