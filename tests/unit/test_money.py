"""Credits at the edges are decimal strings; inside they are exact integer millicredits."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.money import InvalidAmount, format_credits, parse_credits


@pytest.mark.parametrize(("text", "millicredits"), [
    ("1.5", 1500), ("0.5", 500), ("12", 12000), ("0.001", 1), (7, 7000), ("  2.250 ", 2250), ("0", 0),
])
def test_parsing_decimal_strings(text, millicredits):
    assert parse_credits(text) == millicredits


@pytest.mark.parametrize("bad", ["0.0001", "abc", "", "NaN", "Infinity", "-1", 1.5, None, True, "1e400000",
                                 "\u0665", "\uff11", "1_000", "1e3", "+5", "5.", ".5", "1 000"])
def test_bad_amounts_are_refused(bad):
    with pytest.raises(InvalidAmount):
        parse_credits(bad)


@pytest.mark.parametrize(("text", "reason"), [
    ("9223372036854775808", "is beyond the largest amount"),
    ("10000000000000000000000", "is beyond the largest amount"),
    ("-12345678901234567", "is beyond the largest amount"),
    ("1.00000000000000001", "has more precision than a thousandth"),
    ("1000000000001", "is beyond the largest amount"), ("1.0001", "has more precision than a thousandth"),
    ("9" * 65, "must be a decimal string"),
])
def test_an_amount_with_too_many_digits_says_which_way_it_is_too_long(text, reason):
    with pytest.raises(InvalidAmount, match=reason):
        parse_credits(text, allow_negative=True)


def test_a_long_decimal_is_read_by_its_value():
    assert parse_credits("00000000000000000001") == 1000
    assert parse_credits("1.00000000000000000") == 1000


def test_negative_amounts_when_allowed():
    assert parse_credits("-2.5", allow_negative=True) == -2500


@pytest.mark.parametrize(("millicredits", "text"), [
    (1500, "1.5"), (2000, "2"), (1, "0.001"), (-250, "-0.25"), (0, "0"), (123456789, "123456.789"),
])
def test_formatting_is_the_shortest_exact_string(millicredits, text):
    assert format_credits(millicredits) == text


@given(st.integers(min_value=-10**15, max_value=10**15))
def test_format_then_parse_is_the_identity(millicredits):
    assert parse_credits(format_credits(millicredits), allow_negative=True) == millicredits
