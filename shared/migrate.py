"""Schema migrations through Alembic, configured in code so no alembic.ini has to be found."""

from pathlib import Path

from alembic import command
from alembic.config import Config

MIGRATIONS = Path(__file__).parent / "migrations"

# Migrations after this revision are additive: `creditq db upgrade` runs while the release before still serves, so
# an upgrade only adds (tables, nullable or defaulted columns, indexes built concurrently). Dropping or renaming a
# column or a table waits for a later release, once no process of the old one runs, and is listed here with why
# (tests/unit/test_migrations_additive.py holds every migration after the marker to this).
ADDITIVE_SINCE = "0017"
DESTRUCTIVE_STEPS: dict[str, str] = {  # revision -> what it drops or renames, and why it cannot wait
    "0020": "dunning_integrations' primary key moves from `site` to a new `id` (sites belong to accounts, so two "
            "accounts may name a site alike): a process of the release before that saves a dunning integration "
            "fails (no id) until it is replaced; reading them keeps working",
}


def alembic_config(database_url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", database_url)
    return config


def upgrade(database_url: str, revision: str = "head") -> None:
    command.upgrade(alembic_config(database_url), revision)


def check(database_url: str) -> None:
    """Raise when the models and the migrated schema differ (a model change without a migration)."""
    command.check(alembic_config(database_url))
