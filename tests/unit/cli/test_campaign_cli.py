"""`creditq campaign send` as the README shows it: a CSV, a sender, a body and the account, straight into the
database."""

import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta

import pytest

from creditq.cli import main
from shared.ledger import accounts
from shared.models import Campaign, CampaignRecipient, PhoneNumber

SENDER = "+14155550100"


def test_campaign_send_as_the_readme_shows_it_stores_the_campaign(sqlite_database, monkeypatch, tmp_path, capsys):
    # given an account with a sender number and credits, and a CSV of two recipients
    monkeypatch.setenv("DATABASE_URL", sqlite_database.url)
    monkeypatch.setenv("CREDITQ_ADMIN_KEY", "test-operator-key-0123456789")
    with sqlite_database.unit_of_work() as session:
        account, _ = accounts.create_account(
            session, name="Acme", timezone="UTC", plan_monthly_credits=100_000, plan_cycle="monthly",
            plan_rollover="none", overdraft=accounts.Overdraft("prepaid"), low_balance_threshold=0,
            now=datetime.now(UTC))
        session.add(PhoneNumber(account_id=account.id, phone=SENDER, type="long_code"))
        account_id = account.id
    csv = tmp_path / "open-house.csv"
    csv.write_text("to,name\n+14155550101,Ann\n+14155550102,Bo\n")
    send_at = (datetime.now(UTC) + timedelta(days=1)).isoformat()

    # when `creditq campaign send --csv FILE --from NUMBER --body TEXT --account ID` runs (starting tomorrow)
    code = main(["campaign", "send", "--csv", str(csv), "--from", SENDER, "--body", "Hi {{ name }}",
                 "--account", account_id, "--send-at", send_at, "--no-wait"])

    # then the campaign is stored with both recipients, named after the file, and printed as JSON
    assert code == 0
    printed = json.loads(capsys.readouterr().out)
    with sqlite_database.unit_of_work() as session:
        campaign = session.get(Campaign, printed["id"])
        recipients = session.query(CampaignRecipient).filter_by(campaign_id=campaign.id).count()
        assert (campaign.account_id, campaign.name, campaign.status, recipients) == (
            account_id, "open-house.csv", "scheduled", 2)
    assert printed["estimate"]["credits_total"] == "2"


@pytest.mark.parametrize("api", ["notaurl", "ftp://example.com", "http://", "127.0.0.1:8080", "http://[::1"])
def test_an_api_url_that_is_not_http_is_one_line_naming_it(tmp_path, api):
    # given a CSV
    csv = tmp_path / "list.csv"
    csv.write_text("to\n+14155550101\n")

    # when `creditq campaign send --api` names something that is not an http(s) URL
    result = subprocess.run([sys.executable, "-m", "creditq", "campaign", "send", "--csv", str(csv), "--from", SENDER,
                             "--body", "hi", "--api", api, "--key", "cq_live_x", "--no-wait"],
                            env=dict(os.environ, CREDITQ_DATA_DIR=str(tmp_path / "data")), capture_output=True,
                            text=True, timeout=120)

    # then it exits 2 with one line naming it, and no traceback
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith(f"creditq: --api {api!r} is not an http(s) URL")
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(("csv", "reason"), [
    ("/dev/zero", "is not a regular file"),  # it would never end
    (".", "is not a regular file"),
    ("missing.csv", "cannot be read: No such file or directory"),
])
def test_a_csv_that_is_not_a_readable_file_is_one_line_exit_2(monkeypatch, tmp_path, capsys, csv, reason):
    monkeypatch.chdir(tmp_path)

    status = main(["campaign", "send", "--csv", csv, "--from", SENDER, "--body", "hi", "--account", "acct_1"])

    assert status == 2
    assert capsys.readouterr().err.strip().splitlines() == [f"creditq: --csv {csv}: {reason}"]


def test_a_database_that_does_not_answer_is_one_line_exit_2(monkeypatch, capsys):
    monkeypatch.setenv("DATABASE_URL", "postgresql://someone:secret-pw@127.0.0.1:1/creditq")

    status = main(["ledger", "verify"])

    [line] = capsys.readouterr().err.strip().splitlines()
    assert status == 2 and line.startswith("creditq: the database cannot be used: ") and "secret-pw" not in line


def test_a_database_without_creditqs_tables_is_one_line_saying_what_to_do(monkeypatch, tmp_path, capsys):
    # given a directory where creditq never ran, and an empty SQLite file named as the database
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path / 'empty.db'}")

    # when an operations command reads it
    status = main(["ledger", "verify"])

    # then it exits 2 with one line that says the tables are missing and how to get them
    [line] = capsys.readouterr().err.strip().splitlines()
    assert status == 2 and line.startswith("creditq: the database cannot be used: no such table")
    assert "run `creditq db upgrade`" in line and "./.creditq" in line
