"""Alembic environment: the URL comes from the caller's config (creditq db upgrade) or DATABASE_URL."""

from alembic import context

from shared.config import load_settings
from shared.db import make_engine
from shared.models import Base

config = context.config
url = config.get_main_option("sqlalchemy.url") or load_settings().database_url

engine = make_engine(url) if url.startswith("sqlite") else make_engine(url, pool_size=1)
with engine.connect() as connection:
    sqlite = engine.dialect.name == "sqlite"
    if sqlite:
        # Batch migrations rebuild a table (copy, drop, rename); with foreign keys on, dropping a table that
        # other rows point at fails. SQLite ignores this pragma inside a transaction, so it is set on the
        # driver's connection before the migration's transaction begins, and the keys are checked after it.
        connection.connection.driver_connection.execute("PRAGMA foreign_keys=OFF")
    context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True,
                      compare_type=True)
    with context.begin_transaction():
        context.run_migrations()
    if sqlite and (broken := connection.connection.driver_connection.execute("PRAGMA foreign_key_check").fetchall()):
        raise RuntimeError(f"the migration left rows whose foreign keys point nowhere: {broken[:5]}")
engine.dispose()
