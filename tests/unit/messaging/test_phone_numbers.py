"""E.164 parsing and what a number tells us: its country and its possible time zones."""

import pytest

from shared.errors import ValidationFailed
from shared.messaging.phone_numbers import _e164_or_reason, country_of, parse_e164, time_zones_of


@pytest.mark.parametrize(
    ("raw", "e164"),
    [
        ("+14155550100", "+14155550100"),
        ("+1 (415) 555-0100", "+14155550100"),
        (" +44 20 7183 8750 ", "+442071838750"),
        ("+15005550006", "+15005550006"),  # Twilio's test numbers pass, so the simulator can answer them
    ],
)
def test_normalizes_to_e164(raw, e164):
    assert parse_e164(raw) == e164


def test_a_national_number_needs_a_default_region():
    # given a US number without its country code
    # when parsed with and without a default region / then only the region makes it a number
    assert parse_e164("(415) 555-0100", default_region="US") == "+14155550100"
    with pytest.raises(ValidationFailed) as raised:
        parse_e164("(415) 555-0100")
    assert "international format" in raised.value.errors["to"]


@pytest.mark.parametrize("raw", ["+1415555", "+15555550100", "+999123", "hello", "", "   ", None, 14155550100])
def test_invalid_numbers_name_the_field(raw):
    with pytest.raises(ValidationFailed) as raised:
        parse_e164(raw, field="to[3]")

    assert list(raised.value.errors) == ["to[3]"]
    assert str(raised.value).startswith("to[3]")


def test_a_bad_number_seen_before_names_the_field_it_came_in():
    # given a bad number already refused as a recipient
    with pytest.raises(ValidationFailed):
        parse_e164("+1415555", field="to")

    # when the same text comes in as a sender / then the refusal names the sender
    with pytest.raises(ValidationFailed) as raised:
        parse_e164("+1415555", field="from")
    assert list(raised.value.errors) == ["from"] and str(raised.value).startswith("from '+1415555'")


@pytest.mark.parametrize("raw", ["+14155550100ext1", "+1 415 555 0100 x 22", "+14155550100;ext=7"])
def test_a_number_with_an_extension_is_refused_not_texted_at_the_line_without_it(raw):
    # when a number to text, call or send from comes with an extension / then it is refused, naming the extension
    with pytest.raises(ValidationFailed) as raised:
        parse_e164(raw, field="to")

    assert "extension" in raised.value.errors["to"]


def test_where_a_number_only_names_a_line_its_extension_is_dropped():
    # given a number seen first where it is to be texted (refused), then on a do-not-contact list
    with pytest.raises(ValidationFailed):
        parse_e164("+1 415 555 0100 x22", field="to")

    # when it is read as a record's line / then the line is what it names
    assert parse_e164("+1 415 555 0100 x22", field="phone", drop_extension=True) == "+14155550100"


def test_long_input_is_refused_and_not_kept():
    # given a client that sends a number of 10,000 characters
    kept = _e164_or_reason.cache_info().currsize
    with pytest.raises(ValidationFailed):
        parse_e164("+1" + "4" * 9_998)

    # then the parse cache did not keep it
    assert _e164_or_reason.cache_info().currsize == kept

@pytest.mark.parametrize(
    ("e164", "country"),
    [("+14155550100", "US"), ("+16135550123", "CA"), ("+442071838750", "GB"), ("+33612345678", "FR"),
     ("+80012345678", "001")],
)
def test_country_of(e164, country):
    assert country_of(e164) == country


def test_time_zones_of_a_geographic_number_is_its_zone():
    assert time_zones_of("+14155550100") == ("America/Los_Angeles",)
    assert time_zones_of("+12125551234") == ("America/New_York",)


def test_time_zones_of_a_toll_free_number_are_all_candidates():
    zones = time_zones_of("+18005551234")

    assert {"America/New_York", "America/Los_Angeles", "Pacific/Honolulu"} <= set(zones)


def test_time_zones_of_a_non_geographic_number_are_unknown():
    assert time_zones_of("+80012345678") == ()
