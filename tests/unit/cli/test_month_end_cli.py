"""`creditq month-end run` and `creditq report expiring` against a SQLite file."""

from datetime import UTC, datetime, timedelta

import pytest

from creditq.cli import main
from shared.billing.calendar import last_ended
from shared.db import Database
from shared.models import Account, Base


@pytest.fixture
def env(tmp_path, monkeypatch) -> Database:
    url = f"sqlite:///{tmp_path / 'creditq.db'}"
    monkeypatch.setenv("DATABASE_URL", url)
    monkeypatch.setenv("CREDITQ_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("CREDITQ_ADMIN_KEY", "test-operator-key-0123456789")
    database = Database(url)
    Base.metadata.create_all(database.engine)
    with database.unit_of_work() as session:
        session.add(Account(id="acct_cli", name="Cli", timezone="UTC", plan_monthly_credits=100_000,
                            plan_cycle="monthly", status="active", balance=0, held=0, allocated=0, allocated_held=0,
                            created_at=datetime.now(UTC).replace(day=1) - timedelta(days=20)))
    yield database
    database.dispose()


def _balance(database) -> int:
    with database.unit_of_work() as session:
        return session.get(Account, "acct_cli").balance


def test_dry_run_then_run_prints_a_summary_and_grants_once(env, capsys):
    period = str(last_ended(datetime.now(UTC), "UTC"))

    assert main(["month-end", "run", "--period", period, "--dry-run"]) == 0
    assert "dry run" in capsys.readouterr().out and _balance(env) == 0

    assert main(["month-end", "run", "--period", period]) == 0
    out = capsys.readouterr().out
    assert "credits granted" in out and "100" in out
    assert main(["month-end", "run", "--period", period]) == 0
    assert _balance(env) == 100_000


@pytest.mark.parametrize("period", ["2026-13", "11/2026", "soon"])
def test_a_bad_period_is_one_line_and_exit_2(env, capsys, period):
    assert main(["month-end", "run", "--period", period]) == 2

    assert capsys.readouterr().err.strip().splitlines() == [
        f"creditq: period {period!r} must be a month written YYYY-MM, such as 2026-11"]


def test_report_expiring_lists_what_the_month_end_will_expire(env, capsys):
    main(["month-end", "run", "--period", str(last_ended(datetime.now(UTC), "UTC"))])
    capsys.readouterr()

    assert main(["report", "expiring", "--json"]) == 0

    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1 and '"account_id": "acct_cli"' in lines[0] and '"expiring_end_of_month": "100"' in lines[0]
