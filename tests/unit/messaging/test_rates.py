"""The rate card is data: every default price, per-deployment files, and clear failures."""

import copy
import json

import pytest

from shared.config import ConfigError
from shared.errors import ValidationFailed
from shared.messaging.rates import (
    BUNDLED_RATE_CARD,
    ITEMS,
    SENDER_TYPES,
    NoRate,
    default_rate_card,
    load_rate_card,
    parse_rate_card,
)

US_CARD = json.loads(BUNDLED_RATE_CARD.read_text())


@pytest.fixture
def us():
    return load_rate_card(BUNDLED_RATE_CARD)


@pytest.fixture
def fresh_default_card():
    default_rate_card.cache_clear()
    yield default_rate_card
    default_rate_card.cache_clear()


@pytest.mark.parametrize(
    ("item", "sender_type", "millicredits"),
    [
        ("sms", "long_code", 1000),
        ("sms", "toll_free", 1500),
        ("sms", "short_code", 1000),
        ("mms", "long_code", 2000),
        ("mms", "toll_free", 2000),
        ("mms", "short_code", 2000),
        ("call_outgoing", "long_code", 2000),
        ("voice_broadcast", "long_code", 2000),
        ("answering_machine_detection", "long_code", 500),
        ("call_forwarding", "long_code", 3000),
        ("voicemail", "long_code", 1000),
        ("transcription", "long_code", 4000),
        ("phone_number", "long_code", 100_000),
        ("phone_number", "toll_free", 200_000),
        ("phone_number", "short_code", 1_000_000),
    ],
)
def test_default_us_rates(us, item, sender_type, millicredits):
    assert us.price(item, country="US", sender_type=sender_type) == millicredits


def test_the_default_card_prices_every_item_for_every_sender_type(us):
    for item in ITEMS:
        for sender_type in SENDER_TYPES:
            assert us.price(item, country="US", sender_type=sender_type) >= 0


@pytest.mark.parametrize("channel", ["sms", "mms"])
def test_default_carrier_fees_are_modelled_and_zero(us, channel):
    assert us.carrier_fee(channel, country="US", sender_type="toll_free") == 0


def test_the_default_card_is_the_bundled_us_card_without_rate_card_path(fresh_default_card, monkeypatch):
    monkeypatch.delenv("RATE_CARD_PATH", raising=False)

    card = fresh_default_card()

    assert (card.name, card.home_country) == ("US default", "US")
    assert fresh_default_card() is card  # loaded once


def test_an_unlisted_country_is_a_clear_422(us):
    with pytest.raises(NoRate) as raised:
        us.price("sms", country="GB")

    assert isinstance(raised.value, ValidationFailed)
    assert "GB" in str(raised.value)
    assert not us.prices_country("GB")


def test_a_card_with_a_default_entry_prices_every_country():
    data = copy.deepcopy(US_CARD)
    data["countries"]["default"] = copy.deepcopy(data["countries"]["US"])
    data["countries"]["default"]["rates"]["sms"] = "5"

    card = parse_rate_card(data, source="test")

    assert card.prices_country("GB")
    assert card.price("sms", country="GB") == 5000
    assert card.price("sms", country="US") == 1000


def test_an_unknown_sender_type_is_refused(us):
    with pytest.raises(ValidationFailed) as raised:
        us.price("sms", country="US", sender_type="alphanumeric")

    assert "sender_type" in raised.value.errors


def test_carrier_fees_per_sender_type():
    data = copy.deepcopy(US_CARD)
    data["countries"]["US"]["carrier_fees"] = {"sms": {"long_code": "0.003", "toll_free": "0.002", "short_code": "0"}}

    card = parse_rate_card(data, source="test")

    assert card.carrier_fee("sms", country="US", sender_type="long_code") == 3
    assert card.carrier_fee("sms", country="US", sender_type="toll_free") == 2
    assert card.carrier_fee("sms", country="US", sender_type="short_code") == 0
    assert card.carrier_fee("mms", country="US", sender_type="long_code") == 0  # omitted: no fee


def _broken(mutate):
    data = copy.deepcopy(US_CARD)
    mutate(data)
    return data


@pytest.mark.parametrize(
    ("data", "mentions"),
    [
        (_broken(lambda d: d["countries"]["US"]["rates"].pop("transcription")), "missing keys transcription"),
        (_broken(lambda d: d["countries"]["US"]["rates"].update(sms=1.5)), "countries.US.rates.sms"),
        (_broken(lambda d: d["countries"]["US"]["rates"].update(sms="-1")), "negative"),
        (_broken(lambda d: d["countries"]["US"]["rates"].update(sms="0.0001")), "precision"),
        (_broken(lambda d: d["countries"]["US"]["rates"].update(sms={"long_code": "1"})), "missing keys"),
        (_broken(lambda d: d["countries"]["US"]["rates"].update(sms={**dict.fromkeys(SENDER_TYPES, "1"),
                                                                       "tollfree": "1"})),
         "unknown keys tollfree"),
        (_broken(lambda d: d["countries"]["US"]["rates"].update(fax="1")), "unknown keys fax"),
        (_broken(lambda d: d["countries"].update(usa=d["countries"]["US"])), "countries.usa"),
        (_broken(lambda d: d.update(home_country="CA")), "home_country"),
        (_broken(lambda d: d.update(countries={})), "countries"),
        (_broken(lambda d: d.pop("name")), "missing keys name"),
        (_broken(lambda d: d["countries"]["US"]["carrier_fees"].update(voice="1")), "unknown keys voice"),
        ([], "must be an object"),
    ],
)
def test_a_broken_card_fails_with_one_clear_line(data, mentions):
    with pytest.raises(ConfigError) as raised:
        parse_rate_card(data, source="cards/broken.json")

    message = str(raised.value)
    assert message.startswith("rate card cards/broken.json: ")
    assert mentions in message
    assert "\n" not in message


def test_rate_card_path_points_to_another_deployments_card(fresh_default_card, monkeypatch, tmp_path):
    # given a deployment's own card where SMS costs 2 credits
    data = copy.deepcopy(US_CARD)
    data["name"] = "Premium"
    data["countries"]["US"]["rates"]["sms"] = "2"
    path = tmp_path / "premium.json"
    path.write_text(json.dumps(data))
    monkeypatch.setenv("RATE_CARD_PATH", str(path))

    # when the deployment's card is loaded / then it is that file
    card = fresh_default_card()
    assert card.name == "Premium"
    assert card.price("sms", country="US") == 2000


@pytest.mark.parametrize("content", [None, "{not json", '{"name": "x"}'])
def test_a_bad_rate_card_path_fails_with_one_line_naming_the_variable(fresh_default_card, monkeypatch, tmp_path,
                                                                      content):
    path = tmp_path / "card.json"
    if content is not None:
        path.write_text(content)
    monkeypatch.setenv("RATE_CARD_PATH", str(path))

    with pytest.raises(ConfigError) as raised:
        fresh_default_card()

    assert str(raised.value).startswith(f"RATE_CARD_PATH={path}: rate card {path}: ")
    assert "\n" not in str(raised.value)
