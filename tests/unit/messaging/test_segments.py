"""Segment counts follow Twilio's rules: GSM-7 160/153 with two-septet escapes, UCS-2 70/67 in UTF-16 units."""

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.messaging.segments import GSM_BASIC, GSM_EXTENDED, SMART_ENCODING, count_segments

EMOJI = "😀"  # U+1F600: outside the Basic Multilingual Plane, a surrogate pair
ALL_GSM = GSM_BASIC + GSM_EXTENDED


def reference_segments(body: str) -> int:
    """A slow, obviously faithful model: place each indivisible character greedily, segment by segment."""
    if not body:
        return 0
    if all(character in ALL_GSM for character in body):
        sizes = [2 if character in GSM_EXTENDED else 1 for character in body]
        single, concatenated = 160, 153
    else:
        sizes = [2 if ord(character) > 0xFFFF else 1 for character in body]
        single, concatenated = 70, 67
    if sum(sizes) <= single:
        return 1
    segments, used = 1, 0
    for size in sizes:
        if used + size > concatenated:
            segments, used = segments + 1, 0
        used += size
    return segments


@pytest.mark.parametrize(
    ("body", "encoding", "segments", "code_units"),
    [
        ("", "GSM-7", 0, 0),
        ("Hello", "GSM-7", 1, 5),
        # GSM-7 boundaries: one segment holds 160 septets, a concatenated one 153
        ("a" * 152, "GSM-7", 1, 152),
        ("a" * 153, "GSM-7", 1, 153),
        ("a" * 160, "GSM-7", 1, 160),
        ("a" * 161, "GSM-7", 2, 161),
        ("a" * 306, "GSM-7", 2, 306),
        ("a" * 307, "GSM-7", 3, 307),
        ("a" * 1530, "GSM-7", 10, 1530),
        ("a" * 1531, "GSM-7", 11, 1531),
        ("a" * 1600, "GSM-7", 11, 1600),
        # extension characters cost two septets
        ("a" * 158 + "€", "GSM-7", 1, 160),
        ("a" * 159 + "€", "GSM-7", 2, 161),
        # an escape pair that would start on a segment's last septet moves whole to the next segment
        ("a" * 152 + "€" + "a" * 152, "GSM-7", 3, 306),
        ("a" * 151 + "€" + "a" * 153, "GSM-7", 2, 306),
        ("a" * 152 + "€" + "a" * 10, "GSM-7", 2, 164),
        # UCS-2 boundaries: 70 units, 67 per concatenated segment
        ("ç" * 70, "UCS-2", 1, 70),
        ("ç" * 71, "UCS-2", 2, 71),
        ("ç" * 134, "UCS-2", 2, 134),
        ("ç" * 135, "UCS-2", 3, 135),
        ("ç" * 1600, "UCS-2", 24, 1600),
        # an emoji is two UTF-16 units, and a surrogate pair is never split either
        (EMOJI * 35, "UCS-2", 1, 70),
        (EMOJI * 36, "UCS-2", 2, 72),
        ("ç" * 66 + EMOJI + "ç" * 66, "UCS-2", 3, 134),
        ("ç" * 65 + EMOJI + "ç" * 67, "UCS-2", 2, 134),
        # one non-GSM character makes the whole message UCS-2
        ("a" * 100, "GSM-7", 1, 100),
        ("a" * 100 + "ç", "UCS-2", 2, 101),
        # in UCS-2 an extension character is one unit like any other
        ("€" * 69 + "ç", "UCS-2", 1, 70),
    ],
)
def test_counts_like_twilio(body, encoding, segments, code_units):
    # given a body, when it is counted
    result = count_segments(body)

    # then encoding, segments and units are Twilio's
    assert (result.encoding, result.segments, result.code_units) == (encoding, segments, code_units)
    assert result.characters == len(body)


@pytest.mark.parametrize("character", list(GSM_EXTENDED))
def test_every_extended_character_costs_two_septets(character):
    # given 80 of one extension character (160 septets) and then 81
    # when counted / then 80 fit one segment and 81 need two, all in GSM-7
    assert count_segments(character * 80).segments == 1
    assert count_segments(character * 80).code_units == 160
    assert count_segments(character * 81).segments == 2
    assert count_segments(character * 81).encoding == "GSM-7"
    # a concatenated segment holds 76 of them: the 77th would straddle septets 153/154
    assert count_segments(character * 152).segments == 2
    assert count_segments(character * 153).segments == 3


@pytest.mark.parametrize("character", list(GSM_BASIC))
def test_every_basic_character_is_one_septet(character):
    result = count_segments(character * 160)

    assert (result.encoding, result.segments, result.code_units, result.non_gsm_characters) == ("GSM-7", 1, 160, ())


@pytest.mark.parametrize(
    ("body", "non_gsm"),
    [
        ("Привет, world", ("П", "р", "и", "в", "е", "т")),
        ("Hello 世界 é", ("世", "界")),
        ("ΔΦΓΛΩΠΨΣΘΞ", ()),  # the Greek capitals GSM-7 carries
        ("ΑΒΓ", ("Α", "Β")),  # Greek Alpha and Beta look like A and B but are not GSM-7
        ("Ça va? ça va.", ("ç",)),  # GSM-7 has the capital only
        ("مرحبا", ("م", "ر", "ح", "ب", "ا")),
        ("tab\there", ("\t",)),
        ("“quoted” “twice”", ("“", "”")),
        (f"party {EMOJI}{EMOJI}", (EMOJI,)),
    ],
)
def test_reports_the_characters_that_forced_ucs2_once_each_in_order(body, non_gsm):
    result = count_segments(body)

    assert result.non_gsm_characters == non_gsm
    assert result.encoding == ("UCS-2" if non_gsm else "GSM-7")


def test_line_breaks_are_gsm_and_form_feed_is_an_escape():
    assert count_segments("a\r\nb").code_units == 4
    assert count_segments("a\fb").code_units == 4


class TestSmartEncoding:
    def test_is_off_unless_asked(self):
        assert count_segments("“Hi”").encoding == "UCS-2"

    def test_smart_quotes_become_gsm(self):
        # given a 150-character body whose only non-GSM characters are curly quotes
        body = "“" + "a" * 148 + "”"

        # when counted with and without Smart Encoding
        plain, smart = count_segments(body), count_segments(body, smart_encoding=True)

        # then Smart Encoding keeps it one GSM-7 segment instead of three UCS-2 ones
        assert (plain.encoding, plain.segments) == ("UCS-2", 3)
        assert (smart.encoding, smart.segments, smart.non_gsm_characters) == ("GSM-7", 1, ())
        assert smart.characters == 150

    def test_substitutions_can_lengthen_the_body(self):
        result = count_segments("wait…", smart_encoding=True)

        assert (result.encoding, result.code_units, result.characters) == ("GSM-7", 7, 5)

    def test_characters_without_substitute_still_force_ucs2(self):
        result = count_segments(f"“Hi” {EMOJI}", smart_encoding=True)

        assert result.encoding == "UCS-2"
        assert result.non_gsm_characters == (EMOJI,)

    def test_every_substitute_is_gsm(self):
        # given Twilio's substitution list / then every replacement is plain GSM-7 text
        assert SMART_ENCODING
        for replacement in SMART_ENCODING.values():
            assert all(character in ALL_GSM for character in replacement)

    @pytest.mark.parametrize(
        ("character", "replacement"),
        [("\u2019", "'"), ("\u201c", '"'), ("\u2014", "-"), ("\u2026", "..."), ("\u00a0", " "), ("\uff21", "A"),
         ("\uff19", "9"), ("\u00bd", "1/2"), ("\u200b", ""), ("\u2039", "<"), ("\u203a", ">")],
    )
    def test_published_substitutions(self, character, replacement):
        assert SMART_ENCODING[character] == replacement


ALPHABET = st.sampled_from(list(ALL_GSM) + ["ç", "世", "“", EMOJI, "\u2026", "\u00a0"])
GSM_TEXT = st.text(alphabet=st.sampled_from(list(ALL_GSM)), max_size=1600)
MIXED_TEXT = st.text(alphabet=ALPHABET, max_size=1600)


@given(MIXED_TEXT)
def test_matches_the_greedy_reference_model(body):
    assert count_segments(body).segments == reference_segments(body)


@given(st.text(max_size=400))
def test_matches_the_reference_model_on_any_text(body):
    assert count_segments(body).segments == reference_segments(body)


@given(MIXED_TEXT, st.booleans())
def test_segments_never_decrease_as_the_body_grows(body, smart_encoding):
    counts = [count_segments(body[:end], smart_encoding=smart_encoding).segments for end in range(0, len(body) + 1, 37)]

    assert counts == sorted(counts)


@given(GSM_TEXT)
def test_a_gsm_body_never_reports_non_gsm_characters(body):
    result = count_segments(body)

    assert result.encoding == "GSM-7"
    assert result.non_gsm_characters == ()


@given(st.text(alphabet=st.characters(min_codepoint=0x400, max_codepoint=0x52F, categories=["Lu", "Ll"]),
               min_size=71, max_size=1600))
def test_ucs2_segments_are_units_over_67_when_every_letter_stands_alone(body):
    result = count_segments(body)

    assert result.encoding == "UCS-2"
    assert result.segments == math.ceil(result.code_units / 67)


@given(MIXED_TEXT)
def test_padding_costs_at_most_one_unit_per_segment(body):
    result = count_segments(body)
    per_segment = 153 if result.encoding == "GSM-7" else 67

    if result.segments > 1:
        assert math.ceil(result.code_units / per_segment) <= result.segments
        assert result.segments <= math.ceil(result.code_units / (per_segment - 1))
