"""`creditq ledger verify`: exit 0 on a clean ledger, 1 with one line per drift after a row is corrupted."""

from datetime import datetime, timezone

from creditq.cli import main
from shared.ledger import accounts, book
from shared.models import Account, Lot

NOW = datetime(2021, 3, 1, tzinfo=timezone.utc)


def funded_account(database) -> str:
    with database.unit_of_work() as session:
        account, _ = accounts.create_account(
            session, name="Acme", timezone="UTC", plan_monthly_credits=0, plan_cycle="monthly", plan_rollover="none",
            overdraft=accounts.Overdraft("prepaid"), low_balance_threshold=0, now=NOW)
        book.grant(session, account.id, 5_000, "purchase", granted_at=NOW, idempotency_key="seed")
        hold = book.reserve(session, account.id, 1_000, idempotency_key="r", ttl_seconds=60, now=NOW)
        book.settle(session, hold.id, 1_000, idempotency_key="s", now=NOW)
        return account.id


def test_verify_is_clean_then_reports_each_drift_and_exits_1(sqlite_database, monkeypatch, capsys):
    # Given a consistent ledger
    account_id = funded_account(sqlite_database)
    monkeypatch.setenv("DATABASE_URL", sqlite_database.url)
    monkeypatch.setenv("CREDITQ_ADMIN_KEY", "test-operator-key-0123456789")
    assert main(["ledger", "verify"]) == 0
    assert "clean" in capsys.readouterr().out

    # When a lot and the account's held amount are edited by hand
    with sqlite_database.unit_of_work() as session:
        session.query(Lot).filter_by(account_id=account_id).update({"remaining": 9_000})
        session.get(Account, account_id).held = 7

    # Then each drift is printed on its own line and the exit code is 1
    assert main(["ledger", "verify", "--account", account_id]) == 1
    out = capsys.readouterr().out.splitlines()
    assert any("pool lots hold 9000, pool balance is 4000" in line for line in out)
    assert any("held 7 != pending holds 0" in line for line in out)
    assert any("lot 1 remaining 9000 outside 0..5000" in line for line in out)
    assert out[-1].endswith("3 drift(s)")


def test_verify_of_an_account_that_does_not_exist_exits_non_zero_with_one_line(sqlite_database, monkeypatch, capsys):
    # given a ledger without acct_nope
    funded_account(sqlite_database)
    monkeypatch.setenv("DATABASE_URL", sqlite_database.url)
    monkeypatch.setenv("CREDITQ_ADMIN_KEY", "test-operator-key-0123456789")

    # when it is verified
    code = main(["ledger", "verify", "--account", "acct_nope"])

    # then the command fails with one line saying why, and claims nothing is clean
    output = capsys.readouterr()
    assert code == 2 and "clean" not in output.out
    assert output.err.strip().splitlines() == ["creditq: No account acct_nope."]
