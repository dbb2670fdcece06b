"""`creditq db upgrade` loads the rate card and price list files as versions; `creditq rates publish FILE` adds one."""

import json

import pytest

from creditq.cli import main
from shared.billing.price_list import BUNDLED_PRICE_LIST, PRICE_LISTS
from shared.db import Database
from shared.messaging.rates import BUNDLED_RATE_CARD, RATE_CARDS
from shared.price_versions import versions


@pytest.fixture
def database(tmp_path, monkeypatch) -> Database:
    url = f"sqlite:///{tmp_path / 'creditq.db'}"
    monkeypatch.setenv("DATABASE_URL", url)
    monkeypatch.setenv("CREDITQ_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("RATE_CARD_PATH", raising=False)
    database = Database(url)
    yield database
    database.dispose()


def _versions(database: Database, kind=RATE_CARDS) -> list[tuple[int, str]]:
    with database.read_only() as session:
        return [(row.version, row.origin) for row in versions(session, kind)]


def _card_with_sms(tmp_path, credits: str, name: str = "card.json"):
    card = json.loads(BUNDLED_RATE_CARD.read_text())
    card["countries"]["US"]["rates"]["sms"]["long_code"] = credits
    path = tmp_path / name
    path.write_text(json.dumps(card))
    return path


def test_db_upgrade_twice_loads_each_file_as_one_version(database, capsys):
    # given a new database; when the operator runs `creditq db upgrade` twice
    assert main(["db", "upgrade"]) == 0
    assert main(["db", "upgrade"]) == 0

    # then the bundled rate card and price list are one version each, loaded by the upgrade
    assert _versions(database) == [(1, "upgrade")]
    assert _versions(database, PRICE_LISTS) == [(1, "upgrade")]
    out = capsys.readouterr().out
    assert f"rate card {BUNDLED_RATE_CARD}: version 1 (unchanged)" in out
    assert f"price list {BUNDLED_PRICE_LIST}: version 1 (unchanged)" in out


def test_a_published_version_survives_upgrades_until_the_file_changes(database, tmp_path, monkeypatch, capsys):
    # given an upgraded database where the operator published a card with dearer texts
    assert main(["db", "upgrade"]) == 0
    assert main(["rates", "publish", str(_card_with_sms(tmp_path, "1.25"))]) == 0
    assert "rate card version 2 published" in capsys.readouterr().out

    # when the next deploy upgrades with the same bundled file, then the published version stays the newest
    assert main(["db", "upgrade"]) == 0
    assert _versions(database) == [(2, "publish"), (1, "upgrade")]

    # when the deployment's file itself changes (RATE_CARD_PATH), then it becomes the newest version
    monkeypatch.setenv("RATE_CARD_PATH", str(_card_with_sms(tmp_path, "1.5", "deployment.json")))
    assert main(["db", "upgrade"]) == 0
    assert _versions(database) == [(3, "upgrade"), (2, "publish"), (1, "upgrade")]


def test_publishing_the_newest_content_again_adds_nothing(database, tmp_path, capsys):
    assert main(["db", "upgrade"]) == 0
    path = _card_with_sms(tmp_path, "1.25")
    assert main(["rates", "publish", str(path)]) == 0

    assert main(["rates", "publish", str(path)]) == 0

    assert "version 2 already has this content: nothing published" in capsys.readouterr().out
    assert _versions(database) == [(2, "publish"), (1, "upgrade")]


@pytest.mark.parametrize(("content", "reason"), [
    ("{", "is not valid JSON"),
    ('{"name": "x", "home_country": "US", "countries": {"US": {"rates": {"sms": "1"}}}}', "missing keys"),
    ('{"name": "x", "home_country": "US", "countries": {"US": {"rates": {"sms": "-1"}}}}', "countries.US.rates"),
])
def test_a_bad_rate_card_file_is_one_line_exit_2_and_publishes_nothing(database, tmp_path, capsys, content, reason):
    assert main(["db", "upgrade"]) == 0
    path = tmp_path / "bad.json"
    path.write_text(content)
    capsys.readouterr()

    code = main(["rates", "publish", str(path)])

    captured = capsys.readouterr()
    assert code == 2
    assert captured.err.startswith(f"creditq: rate card {path}: ")
    assert reason in captured.err
    assert captured.err.count("\n") == 1
    assert _versions(database) == [(1, "upgrade")]


def test_a_missing_file_and_a_bad_price_list_are_one_line_exit_2(database, tmp_path, capsys):
    assert main(["db", "upgrade"]) == 0
    broken = tmp_path / "prices.json"
    broken.write_text('{"currency": "usd"}')
    capsys.readouterr()

    assert main(["rates", "publish", str(tmp_path / "nowhere.json")]) == 2
    assert main(["rates", "publish", "--price-list", str(broken)]) == 2

    lines = capsys.readouterr().err.splitlines()
    assert lines[0].startswith(f"creditq: rate card {tmp_path / 'nowhere.json'}: cannot be read")
    assert lines[1].startswith(f"creditq: price list {broken}: missing key")
    assert _versions(database, PRICE_LISTS) == [(1, "upgrade")]


def test_rates_list_shows_the_versions_newest_first(database, tmp_path, capsys):
    assert main(["db", "upgrade"]) == 0
    assert main(["rates", "publish", str(_card_with_sms(tmp_path, "1.25"))]) == 0
    capsys.readouterr()

    assert main(["rates", "list"]) == 0

    lines = capsys.readouterr().out.splitlines()
    assert [line.split("\t")[0] + " " + line.split("\t")[2] for line in lines] == ["2 publish", "1 upgrade"]
