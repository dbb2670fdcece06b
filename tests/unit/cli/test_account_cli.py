"""`creditq account cancel|reactivate|mark-spam`: the account's life from the command line, one line on failure."""

from datetime import datetime, timezone

import pytest

from creditq.cli import main
from shared.ledger import account_events, accounts

NOW = datetime(2026, 3, 1, tzinfo=timezone.utc)


@pytest.fixture
def account_id(sqlite_database, monkeypatch) -> str:
    monkeypatch.setenv("DATABASE_URL", sqlite_database.url)
    monkeypatch.setenv("CREDITQ_ADMIN_KEY", "test-operator-key-0123456789")
    with sqlite_database.unit_of_work() as session:
        account, _ = accounts.create_account(
            session, name="Acme", timezone="UTC", plan_monthly_credits=100_000, plan_cycle="monthly",
            plan_rollover="none", overdraft=accounts.Overdraft("prepaid"), low_balance_threshold=0, now=NOW)
        return account.id


def status(database, account_id) -> tuple[str, bool, int]:
    with database.unit_of_work() as session:
        account = accounts.get_account(session, account_id)
        return account.status, account.spam, account.balance


def test_cancel_then_reactivate_prints_the_new_key_and_records_the_cli_as_the_actor(
        sqlite_database, account_id, capsys):
    assert main(["account", "cancel", account_id, "--reason", "asked to leave"]) == 0
    assert status(sqlite_database, account_id) == ("canceled", False, 0)
    assert main(["account", "cancel", account_id]) == 0
    assert "canceled already" in capsys.readouterr().out

    assert main(["account", "reactivate", account_id, "--monthly-credits", "250"]) == 0

    assert "cq_live_" in capsys.readouterr().out
    assert status(sqlite_database, account_id) == ("active", False, 250_000)
    with sqlite_database.unit_of_work() as session:
        recorded = [(event.action, event.actor) for event in account_events.list_events(session, account_id, limit=9)]
    assert recorded == [("reactivate", "cli"), ("cancel", "cli")]


def test_mark_spam_flags_and_cancels(sqlite_database, account_id):
    assert main(["account", "mark-spam", account_id]) == 0
    assert status(sqlite_database, account_id) == ("canceled", True, 0)


@pytest.mark.parametrize(("argv", "reason"), [
    (["account", "cancel", "acct_nobody"], "No account acct_nobody."),
    (["account", "reactivate", "{account}", "--monthly-credits", "10"], "only a canceled account can be reactivated"),
    (["account", "reactivate", "{account}", "--monthly-credits", "ten"], "--monthly-credits must be a decimal"),
    (["account", "cancel", "{account}", "--reason", "x" * 201], "--reason must be 1 to 200 characters"),
    (["account", "cancel", "{account}", "--reason", " "], "--reason must be 1 to 200 characters"),
])
def test_bad_input_exits_non_zero_with_a_one_line_reason(sqlite_database, account_id, capsys, argv, reason):
    assert main([arg.replace("{account}", account_id) for arg in argv]) != 0
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and reason in err
    assert status(sqlite_database, account_id)[0] == "active"  # refused before any change
