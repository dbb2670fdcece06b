"""Alembic environment: the URL comes from the caller's config (creditq db upgrade) or DATABASE_URL."""

from alembic import context

from shared.config import load_settings
from shared.db import make_engine
from shared.models import Base

config = context.config
url = config.get_main_option("sqlalchemy.url") or load_settings().database_url

engine = make_engine(url) if url.startswith("sqlite") else make_engine(url, pool_size=1)
with engine.connect() as connection:
    context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True,
                      compare_type=True)
    with context.begin_transaction():
        context.run_migrations()
engine.dispose()
