"""Twilio's own segment calculator (github.com/TwilioDevEd/message-segment-calculator), its published
test cases ported: the estimate and the simulator must count as it does, so a hold covers what Twilio bills.

Where the calculator's Smart Encoding table gives a different replacement than Twilio's published
character list (no-break space as two spaces, TAB as seven, the single angle quotes swapped), the
published list wins; every character the calculator replaces is replaced here too.
"""

import pytest

from shared.messaging.segments import count_segments
from twilio_sim.segments import count_segments as simulator_count

DIGITS = "1234567890"
EMOJI, FLAG, RAINBOW_FLAG = "\U0001F61C", "\U0001F1EE\U0001F1F9", "\U0001F3F3\uFE0F\u200D\U0001F308"
TECHNOLOGIST = "\U0001F469\u200D\U0001F4BB"  # woman + ZWJ + laptop: one user-perceived character


def digits_from_2(count: int) -> str:
    return "".join(str(n % 10) for n in range(2, 2 + count))


CALCULATOR_CASES = [  # (what, body, encoding, segments) from the calculator's tests/index.test.js
    ("GSM-7 in one segment", DIGITS * 16, "GSM-7", 1),
    ("GSM-7 in two segments", DIGITS * 16 + "1", "GSM-7", 2),
    ("GSM-7 in three segments", DIGITS * 30 + "1234567", "GSM-7", 3),
    ("UCS-2 message in one segment", EMOJI + digits_from_2(68), "UCS-2", 1),
    ("UCS-2 message in two segments", EMOJI + digits_from_2(69), "UCS-2", 2),
    ("UCS-2 message in three segments", EMOJI + digits_from_2(133), "UCS-2", 3),
    ("UCS-2 flag on the one-segment boundary", FLAG + digits_from_2(66), "UCS-2", 1),
    ("UCS-2 flag on the two-segment boundary", FLAG + digits_from_2(67), "UCS-2", 2),
    ("UCS-2 ZWJ sequence on the one-segment boundary", RAINBOW_FLAG + digits_from_2(64), "UCS-2", 1),
    ("UCS-2 ZWJ sequence on the two-segment boundary", RAINBOW_FLAG + digits_from_2(65), "UCS-2", 2),
    *[(f"GSM-7 escape {c} in one segment", c + (DIGITS * 16)[:158], "GSM-7", 1) for c in "|^€{}[]~\\"],
    *[(f"GSM-7 escape {c} in two segments", c + (DIGITS * 16)[:159], "GSM-7", 2) for c in "|^€{}[]~\\"],
    *[(f"70 of {c}", c * 70, "UCS-2", 1) for c in "ÁÚúçíÍóÓ"],
    *[(f"71 of {c}", c * 71, "UCS-2", 2) for c in "ÁÚúçíÍóÓ"],
    ("UCS-2 with GSM extension characters in one segment", "\U0001F600" + "]" * 68, "UCS-2", 1),
    ("UCS-2 with GSM extension characters in two segments", "\U0001F600" + "]" * 69, "UCS-2", 2),
    ("a letter and three accents, then 66 letters", "e\u0301\u0301\u0301" + "a" * 66, "UCS-2", 1),
    ("a letter and three accents, then 67 letters", "e\u0301\u0301\u0301" + "a" * 67, "UCS-2", 2),
    # a boundary falls inside the ZWJ sequence: the whole cluster moves to the third segment
    ("a ZWJ sequence across a boundary", "\u00e1" + "a" * 64 + TECHNOLOGIST + "a" * 64, "UCS-2", 3),
    ("a flag across a boundary", "\u00e1" + "a" * 64 + FLAG + "a" * 64, "UCS-2", 3),
    ("a skin tone across a boundary", "\u00e1" + "a" * 64 + "\U0001F44D\U0001F3FD" + "a" * 64, "UCS-2", 3),
    ("a keycap across a boundary", "\u00e1" + "a" * 65 + "1\uFE0F\u20E3" + "a" * 65, "UCS-2", 3),
    ("a combining accent across a boundary", "\u00e1" + "a" * 65 + "e\u0301" + "a" * 66, "UCS-2", 3),
    ("a cluster longer than a segment is split", "a" + "\u0301" * 140 + "b" * 70, "UCS-2", 4),
    ("CR LF counts as two characters", "\u00e1" + "a" * 65 + "\r\n" + "a" * 66, "UCS-2", 2),
]

CALCULATOR_SMART_ENCODED = (  # every character the calculator's Smart Encoding map replaces
    "\u00ab\u00bb\u201c\u201d\u02ba\u02ee\u201f\u201e\u275d\u275e\u301d\u301e\uff02\u2018\u2019\u02bb\u02c8\u02bc"
    "\u02bd\u02b9\u201b\uff07\u00b4\u02ca\u0060\u02cb\u275b\u275c\u0313\u0314\ufe10\ufe11\u00f7\u00bc\u00bd\u00be"
    "\u29f8\u0337\u0338\u2044\u2215\uff0f\u29f9\u29f5\u20e5\ufe68\uff3c\u0332\uff3f\u20d2\u20d3\u2223\uff5c\u23b8"
    "\u23b9\u23d0\u239c\u239f\u23bc\u23bd\u2015\ufe63\uff0d\u2010\u2043\ufe6b\uff20\ufe69\uff04\u01c3\ufe15\ufe57"
    "\uff01\ufe5f\uff03\ufe6a\uff05\ufe60\uff06\u201a\u0326\ufe50\ufe51\uff0c\uff64\u2768\u276a\ufe59\uff08\u27ee"
    "\u2985\u2769\u276b\ufe5a\uff09\u27ef\u2986\u204e\u2217\u229b\u2722\u2723\u2724\u2725\u2731\u2732\u2733\u273a"
    "\u273b\u273c\u273d\u2743\u2749\u274a\u274b\u29c6\ufe61\uff0a\u02d6\ufe62\uff0b\u3002\ufe52\uff0e\uff61\uff10"
    "\uff11\uff12\uff13\uff14\uff15\uff16\uff17\uff18\uff19\u02d0\u02f8\u2982\ua789\ufe13\uff1a\u204f\ufe14\ufe54"
    "\uff1b\ufe64\uff1c\u0347\ua78a\ufe66\uff1d\ufe65\uff1e\ufe16\ufe56\uff1f\uff21\u1d00\uff22\u0299\uff23\u1d04"
    "\uff24\u1d05\uff25\u1d07\uff26\ua730\uff27\u0262\uff28\u029c\uff29\u026a\uff2a\u1d0a\uff2b\u1d0b\uff2c\u029f"
    "\uff2d\u1d0d\uff2e\u0274\uff2f\u1d0f\uff30\u1d18\uff31\uff32\u0280\uff33\ua731\uff34\u1d1b\uff35\u1d1c\uff36"
    "\u1d20\uff37\u1d21\uff38\uff39\u028f\uff3a\u1d22\u02c6\u0302\uff3e\u1dcd\u2774\ufe5b\uff5b\u2775\ufe5c\uff5d"
    "\uff3b\uff3d\u02dc\u02f7\u0303\u0330\u0334\u223c\uff5e\u00a0\u2000\u2002\u2003\u2004\u2005\u2006\u2007\u2008"
    "\u2009\u200a\u202f\u205f\u3000\u008d\u009f\u0080\u0090\u009b\u0010\u0009\u0000\u0003\u0004\u0017\u0019\u0011"
    "\u0012\u0013\u0014\u2060\u2017\u2014\u2013\u2039\u203a\u203c\u2028\u2029\u2026\u2001\u200b\u3001\ufeff\u2022"
)


@pytest.mark.parametrize("what, body, encoding, segments", CALCULATOR_CASES, ids=[c[0] for c in CALCULATOR_CASES])
def test_the_estimate_counts_as_twilios_calculator(what, body, encoding, segments):
    # when
    counted = count_segments(body)

    # then
    assert (counted.encoding, counted.segments) == (encoding, segments)


@pytest.mark.parametrize("what, body, encoding, segments", CALCULATOR_CASES, ids=[c[0] for c in CALCULATOR_CASES])
def test_the_simulator_bills_as_twilios_calculator(what, body, encoding, segments):
    assert simulator_count(body) == segments


@pytest.mark.parametrize("character", CALCULATOR_SMART_ENCODED, ids=lambda c: f"U+{ord(c):04X}")
def test_smart_encoding_replaces_every_character_the_calculator_replaces(character):
    # given a GSM-7 body with one character the calculator's Smart Encoding replaces
    body = "Hi " + character + " there"

    # when / then: it stays GSM-7 with Smart Encoding, and only with it
    assert count_segments(body, smart_encoding=True).encoding == "GSM-7"
    assert count_segments(body).encoding == "UCS-2"


def test_zero_width_non_joiner_and_double_low_line_are_smart_encoded():
    counted = count_segments("a\u200cb\u2017c", smart_encoding=True)

    assert (counted.encoding, counted.code_units) == ("GSM-7", 4)  # "ab_c"
