"""Recipients of a campaign: CSV and inline lists, and the numbers' first (cheap) check."""

import pytest

from shared.campaigns.recipients import looks_like_e164, parse_csv, parse_inline
from shared.errors import ValidationFailed


def test_csv_has_a_to_column_and_every_other_column_is_a_field():
    recipients = parse_csv("first_name,to,city\nAnn,+14155550100,SF\n\nBo,+1 (415) 555-0101,LA\n")
    assert [(r.where, r.to, r.fields) for r in recipients] == [
        ("csv line 2", "+14155550100", {"first_name": "Ann", "city": "SF"}),
        ("csv line 4", "+1 (415) 555-0101", {"first_name": "Bo", "city": "LA"}),
    ]


@pytest.mark.parametrize("text, where", [
    ("phone,name\n+14155550100,Ann\n", "line 1"),
    ("to,name\n+14155550100,Ann,extra\n", "line 2"),
    ("to,to\n+1,+2\n", "line 1"),
    ("", "empty"),
])
def test_bad_csv_is_refused_naming_the_line(text, where):
    with pytest.raises(ValidationFailed) as refused:
        parse_csv(text)
    assert where in refused.value.errors["csv"]


def test_inline_recipients_need_a_to_and_flat_fields():
    assert parse_inline([{"to": "+14155550100", "fields": {"n": 1}}])[0].fields == {"n": 1}
    with pytest.raises(ValidationFailed) as refused:
        parse_inline([{"to": "+14155550100"}, {"to": "+14155550101", "fields": {"n": {"nested": 1}}}])
    assert "recipients[1]" in refused.value.errors


@pytest.mark.parametrize("raw, expected", [
    ("+1 (415) 555-0100", "+14155550100"), ("+44 20 7946 0958", "+442079460958"), ("4155550100", None),
    ("+0123", None), ("call me", None),
])
def test_numbers_are_normalized_when_they_look_like_e164(raw, expected):
    assert looks_like_e164(raw) == expected
