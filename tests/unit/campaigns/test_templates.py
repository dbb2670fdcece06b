"""Liquid bodies: strict about fields, precise about where a template is wrong."""

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from liquid.exceptions import LiquidError

from shared.campaigns.templates import compile_template, render
from shared.errors import ValidationFailed


def test_a_body_renders_each_recipients_fields():
    template = compile_template("Hi {{ first_name | capitalize }}!", known_fields={"first_name", "to"})
    assert render(template, {"first_name": "ann"}, recipient="csv line 2") == "Hi Ann!"


def test_an_unknown_field_is_refused_naming_the_line_and_the_field():
    with pytest.raises(ValidationFailed) as refused:
        compile_template("Hi {{ first_name }},\nyour visit is {{ when }}", known_fields={"first_name", "to"})
    reason = refused.value.errors["body"]
    assert "line 2" in reason and "'when'" in reason


def test_a_syntax_error_is_refused_naming_the_line():
    with pytest.raises(ValidationFailed) as refused:
        compile_template("Hello\n{% if vip %}VIP{% endfor %}", field="steps[0].body", known_fields={"vip"})
    assert "line 2" in refused.value.errors["steps[0].body"]


def test_a_recipient_without_a_field_is_refused_naming_the_recipient():
    template = compile_template("Hi {{ first_name }}", known_fields={"first_name"})
    with pytest.raises(ValidationFailed) as refused:
        render(template, {}, recipient="recipients[3]")
    assert "recipients[3]" in refused.value.errors["body"] and "line 1" in refused.value.errors["body"]


def test_loops_and_assignments_are_not_unknown_fields():
    template = compile_template("{% assign n = name | upcase %}{{ n }}", known_fields={"name"})
    assert render(template, {"name": "bo"}, recipient="r") == "BO"


def test_an_empty_body_is_refused():
    with pytest.raises(ValidationFailed):
        compile_template("  ")


def test_default_fills_a_field_a_recipient_lacks():
    template = compile_template('Hi {{ name }}, see you {{ day | default: "Sunday" }}', known_fields={"name", "day"})

    assert render(template, {"name": "Ann"}, recipient="recipients[0]") == "Hi Ann, see you Sunday"


@pytest.mark.parametrize(("body", "reason"), [
    ('{% include "/etc/passwd" %}', "unexpected tag 'include'"),
    ('{% render "other" %}', "unexpected tag 'render'"),
])
def test_a_body_cannot_include_other_templates(body, reason):
    with pytest.raises(ValidationFailed, match=reason):
        compile_template(body, known_fields=set())


def test_a_runaway_loop_is_stopped_and_refused():
    template = compile_template("{% for i in (1..100000000) %}x{% endfor %}", known_fields=set())

    with pytest.raises(ValidationFailed, match="loop iteration limit"):
        render(template, {}, recipient="recipients[0]")


# A string doubled 20 times holds 10 MB: far past what a text needs, still small enough to render unbounded here.
DOUBLING = '{% assign s = "xxxxxxxxxx" %}{% for i in (1..20) %}{% assign s = s | append: s %}{% endfor %}{{ s | size }}'
SQUARING = '{% assign n = 7 %}{% for i in (1..20) %}{% assign n = n | times: n %}{% endfor %}{{ n | size }}'


@pytest.mark.parametrize("body", [DOUBLING, SQUARING])
def test_a_value_grown_in_a_loop_is_stopped_and_refused(body):
    # given a body whose loop doubles a string (or squares a number) within the loop limit
    template = compile_template(body, known_fields=set())

    # when it is rendered, then it is refused once what it holds passes the limit, naming the body
    with pytest.raises(ValidationFailed, match="local namespace limit") as refused:
        render(template, {}, recipient="recipients[0]")
    assert "recipients[0]" in refused.value.errors["body"]


@pytest.mark.parametrize(("body", "limit"), [
    ('{{ (1..40000000) | join: "" | size }}', "filter input limit"),  # a range walked by a filter
    ("{{ (1..10) | concat: (1..40000000) | size }}", "filter input limit"),  # or handed to one
    ("{{ (1..1000) | join: name | size }}", "filter result limit"),  # a separator repeated a thousand times
    ('{{ name | replace: "a", name | size }}', "filter result limit"),  # each character replaced by all of them
])
def test_a_filter_that_would_build_a_huge_value_is_stopped_before_it_does(body, limit):
    # given a recipient whose field is 20,000 characters (a campaign's CSV may carry such)
    template = compile_template(body, known_fields={"name"})

    # when the body is rendered for them, then it is refused naming the limit, before anything is built
    with pytest.raises(ValidationFailed, match=limit):
        render(template, {"name": "a" * 20_000}, recipient="recipients[0]")


def test_filters_within_the_limits_render_as_liquid_renders_them():
    template = compile_template('{{ (1..5) | join: "," }} {{ name | replace: "o", "0" | upcase }}',
                                known_fields={"name"})
    assert render(template, {"name": "bob"}, recipient="r") == "1,2,3,4,5 B0B"


_NAMES = st.sampled_from(["first_name", "agent", "to", "x", "true", "nil", "empty", "_n1"])
_TEXT = st.text(alphabet="ab {}%-|:\r\n😀é", max_size=12)
_VALUES = st.one_of(st.text(max_size=8), st.integers(), st.floats(allow_nan=False), st.booleans(), st.none(),
                    st.lists(st.text(max_size=3), max_size=3))


@settings(max_examples=500, deadline=None)
@example(parts=[("", "first_name", "{{ %s }}")], tail="", fields={"first_name": "\r"})  # Liquid prints it "\n"
@given(parts=st.lists(st.tuples(_TEXT, _NAMES, st.sampled_from(["{{ %s }}", "{{%s}}", "{{  %s }}", "{{- %s }}",
                                                                    "{{ %s | upcase }}"])), max_size=4),
       tail=_TEXT, fields=st.dictionaries(_NAMES, _VALUES))
def test_every_body_renders_exactly_as_liquid_renders_it(parts, tail, fields):
    # given any body made of text and outputs (plain ones take a shortcut, the rest go through Liquid)
    source = "".join(text + output % name for text, name, output in parts) + tail
    try:
        template = compile_template(source)
    except ValidationFailed:
        return  # not a template Liquid accepts
    # when it is rendered, then the result, or the refusal, is Liquid's own
    try:
        expected = template.compiled.render(**fields)
    except LiquidError:
        with pytest.raises(ValidationFailed):
            render(template, fields, recipient="r")
        return
    assert render(template, fields, recipient="r") == expected
