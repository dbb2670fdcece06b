"""`creditq data erase PHONE` and `creditq data redact-expired`, straight into DATABASE_URL."""

from datetime import UTC, datetime, timedelta

from creditq.cli import main
from shared.models import Account, Message, OptOut

ANN = "+14155550100"


def seed(database, updated_at: datetime) -> None:
    with database.unit_of_work() as session:
        session.add(Account(id="acct_1", name="Grace"))
        session.flush()
        session.add(Message(id="msg_1", account_id="acct_1", to=ANN, from_="+14155550000", body="hi Ann",
                            status="delivered", created_at=updated_at, updated_at=updated_at))
        session.add(OptOut(account_id="acct_1", phone=ANN, source="stop_keyword"))


def bodies(database) -> set[str]:
    with database.unit_of_work() as session:
        return {message.body for message in session.query(Message)}


def test_erase_prints_what_it_erased_and_what_it_kept(sqlite_database, monkeypatch, capsys):
    seed(sqlite_database, datetime.now(UTC))
    monkeypatch.setenv("DATABASE_URL", sqlite_database.url)

    assert main(["data", "erase", ANN]) == 0

    assert capsys.readouterr().out.strip() == (
        f"erased {ANN}: 1 message(s), 0 call(s), 0 campaign recipient(s), 0 event(s); 0 message(s) and call(s) in "
        "flight left (erase again once final); 1 opt-out(s) kept so the number is never texted again")
    assert bodies(sqlite_database) == {""}


def test_erase_refuses_a_number_without_its_country_in_one_line(sqlite_database, monkeypatch, capsys):
    seed(sqlite_database, datetime.now(UTC))
    monkeypatch.setenv("DATABASE_URL", sqlite_database.url)

    assert main(["data", "erase", "415-555-0100"]) == 2

    assert capsys.readouterr().err.strip().splitlines() == [
        "creditq: phone '415-555-0100' is not a phone number in international format, such as +14155550100"]
    assert bodies(sqlite_database) == {"hi Ann"}


def test_erase_takes_a_number_as_people_write_it(sqlite_database, monkeypatch, capsys):
    seed(sqlite_database, datetime.now(UTC))
    monkeypatch.setenv("DATABASE_URL", sqlite_database.url)

    assert main(["data", "erase", "+1 (415) 555-0100"]) == 0

    assert capsys.readouterr().out.startswith(f"erased {ANN}: 1 message(s)") and bodies(sqlite_database) == {""}


def test_redact_expired_follows_the_configured_retention(sqlite_database, monkeypatch, capsys):
    seed(sqlite_database, datetime.now(UTC) - timedelta(days=40))
    monkeypatch.setenv("DATABASE_URL", sqlite_database.url)

    monkeypatch.delenv("CREDITQ_RETENTION_DAYS", raising=False)
    assert main(["data", "redact-expired"]) == 2
    assert "CREDITQ_RETENTION_DAYS is not set" in capsys.readouterr().err

    monkeypatch.setenv("CREDITQ_RETENTION_DAYS", "30")
    assert main(["data", "redact-expired"]) == 0
    assert "redacted 1 message(s)" in capsys.readouterr().out
    assert bodies(sqlite_database) == {""}
