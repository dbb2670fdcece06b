"""`creditq estimate`: a table for people, the API's JSON with --json, one line and exit 2 for bad input."""

import json
import re

import pytest

from creditq.cli import main
from shared.messaging.rates import default_rate_card


@pytest.fixture(autouse=True)
def bundled_rate_card(monkeypatch):
    monkeypatch.delenv("RATE_CARD_PATH", raising=False)
    default_rate_card.cache_clear()
    yield
    default_rate_card.cache_clear()


def test_json_output_is_the_api_shape(capsys):
    code = main(["estimate", "Open house Sunday!", "--to", "+14155550100", "--to", "+12125551234", "--json"])

    assert code == 0
    assert json.loads(capsys.readouterr().out) == {
        "characters": 18, "encoding": "GSM-7", "segments": 1, "credits_per_recipient": "1", "recipients": 2,
        "credits_total": "2", "non_gsm_characters": [], "channel": "sms", "sender_type": "long_code",
    }


def test_several_numbers_after_one_to(capsys):
    assert main(["estimate", "Hi", "--to", "+14155550100", "+12125551234", "--json"]) == 0

    assert json.loads(capsys.readouterr().out)["recipients"] == 2


def test_sender_type_and_smart_encoding(capsys):
    code = main(["estimate", "It’s “here”", "--sender-type", "toll_free", "--smart-encoding", "--json"])

    answer = json.loads(capsys.readouterr().out)
    assert code == 0
    assert (answer["encoding"], answer["credits_total"]) == ("GSM-7", "1.5")


def test_the_default_output_is_a_table(capsys):
    code = main(["estimate", "Blessings 🙏 to all", "--recipients", "3"])

    out = capsys.readouterr().out
    assert code == 0
    assert "UCS-2" in out
    assert "U+1F64F" in out
    assert re.search(r"Credits total\W+3\b", out)


@pytest.mark.parametrize(
    ("argv", "mentions"),
    [
        (["estimate", ""], "body is empty"),
        (["estimate", "a" * 1601], "1,601 characters"),
        (["estimate", "Hi", "--to", "+1415555"], "to[0] is not a valid phone number"),
        (["estimate", "Hi", "--to", "+442071838750"], "GB"),
    ],
)
def test_bad_input_is_one_line_on_stderr_and_exit_2(capsys, argv, mentions):
    code = main(argv)

    captured = capsys.readouterr()
    assert code == 2
    assert captured.out == ""
    assert mentions in captured.err
    assert captured.err.count("\n") == 1


def test_a_broken_rate_card_path_is_one_line(capsys, monkeypatch, tmp_path):
    path = tmp_path / "card.json"
    path.write_text("{")
    monkeypatch.setenv("RATE_CARD_PATH", str(path))

    code = main(["estimate", "Hi"])

    captured = capsys.readouterr()
    assert code == 2
    assert captured.err.startswith(f"creditq: RATE_CARD_PATH={path}: ")
    assert captured.err.count("\n") == 1


def test_a_voice_broadcast_estimate_is_numbers_times_minutes_times_rate_plus_detection(capsys):
    code = main(["estimate", "--voice-broadcast", "--recipients", "500", "--expected-minutes", "2",
                 "--machine-detection", "--json"])

    assert code == 0
    assert json.loads(capsys.readouterr().out) == {"numbers": 500, "expected_minutes": 2, "credits_per_minute": "2",
                                                   "detection_per_number": "0.5", "credits": "2250"}


def test_a_voice_broadcast_estimate_takes_no_message_text(capsys):
    assert main(["estimate", "Hello", "--voice-broadcast", "--recipients", "5"]) == 2
