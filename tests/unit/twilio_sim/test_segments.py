"""The simulator's own segment counter follows Twilio's GSM-7 / UCS-2 rules."""

import pytest

from twilio_sim.segments import count_segments


@pytest.mark.parametrize(
    ("body", "segments"),
    [
        ("", 1),
        ("a" * 160, 1),
        ("a" * 161, 2),
        ("a" * 306, 2),
        ("a" * 307, 3),
        ("@£$¥èéùìòÇØøÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ¡ÄÖÑÜ§¿äöñüà", 1),
        ("€" * 80, 1),  # extended characters take two septets: 160
        ("€" * 81, 2),
        ("a" * 152 + "€", 1),  # 154 septets still fit one message
        ("a" * 159 + "€", 2),
        ("a" * 152 + "€" + "a" * 10, 2),  # the escape pair is not split at 153: moves whole
        ("ä" * 70 + "ç", 2),  # ç is not GSM-7 (Ç is): the body becomes UCS-2
        ("ç" * 70, 1),
        ("ç" * 71, 2),
        ("ç" * 134, 2),
        ("ç" * 135, 3),
        ("👍" * 35, 1),  # surrogate pairs: 70 UTF-16 units
        ("👍" * 36, 2),
        ("a" * 66 + "👍", 1),  # 68 units fits one UCS-2 message
        ("a" * 66 + "👍" + "a" * 4, 2),  # the pair starting at unit 67 is not split
    ],
)
def test_counts_segments_as_twilio_bills_them(body, segments):
    # given a body / when it is counted / then it costs what Twilio bills
    assert count_segments(body) == segments


def test_an_emoji_pair_is_never_split_across_segments():
    # given a UCS-2 body whose 67th unit would be the first half of an emoji
    body = "ç" * 66 + "👍" * 34

    # when it is counted
    # then segment 1 holds only the 66 ç, and the 34 emoji (68 units) need two more
    assert count_segments(body) == 3
