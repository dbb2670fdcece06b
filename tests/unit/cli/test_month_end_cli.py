"""`creditq month-end run`, `creditq report expiring` and `creditq report advice` against a SQLite file."""

import json
from datetime import UTC, datetime, timedelta

import pytest

from creditq.cli import main
from shared.billing.calendar import last_ended
from shared.billing.price_list import default_price_list
from shared.db import Database
from shared.ids import new_id
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

    report = json.loads(capsys.readouterr().out)
    assert [(row["account_id"], row["expiring_end_of_month"]) for row in report] == [("acct_cli", "100")]


def test_report_expiring_as_json_is_an_empty_array_when_nothing_expires(env, capsys):
    # given an account with no credits at all
    assert main(["report", "expiring", "--json"]) == 0

    assert json.loads(capsys.readouterr().out) == []


def test_the_report_table_never_cuts_an_account_id_in_a_narrow_terminal(env, capsys, monkeypatch):
    # given an account id as creditq makes them (31 characters) with credits expiring, and a terminal 40 columns wide
    account_id = new_id("acct")
    with env.unit_of_work() as session:
        session.add(Account(id=account_id, name="A name long enough to need wrapping in a narrow table",
                            timezone="UTC", plan_monthly_credits=100_000, plan_cycle="monthly", status="active",
                            balance=0, held=0, allocated=0, allocated_held=0,
                            created_at=datetime.now(UTC).replace(day=1) - timedelta(days=20)))
    assert main(["month-end", "run", "--period", str(last_ended(datetime.now(UTC), "UTC"))]) == 0
    capsys.readouterr()
    monkeypatch.setenv("COLUMNS", "40")

    assert main(["report", "expiring"]) == 0

    assert account_id in capsys.readouterr().out


def test_report_advice_names_the_accounts_a_cheaper_option_would_have_served(env, capsys):
    # given an account on the 100-credit plan that sent nothing since it was created last month
    prices = default_price_list()

    assert main(["report", "advice", "--json"]) == 0
    [advice] = json.loads(capsys.readouterr().out)
    assert main(["report", "advice"]) == 0
    table = capsys.readouterr().out

    # then credit hold would have cost its fee alone: the saving is the price list's difference for each month it had
    assert advice["account_id"] == "acct_cli" and advice["recommended"]["kind"] == "credit_hold"
    assert [cycle["used"] for cycle in advice["cycles"]] == ["0"]  # created last month: one month to judge by
    assert advice["saving_cents"] == prices.subscription(100_000).monthly_price_cents \
        - prices.credit_hold_monthly_fee_cents == 400
    assert "acct_cli" in table and "credit hold" in table and "4.00 USD" in table
