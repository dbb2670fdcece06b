"""How many SMS segments Twilio will send for a body, following Twilio's published rules.

GSM-7: the basic set costs one septet, the extension table two (an escape pair that is never
split across segments); 160 septets fit one segment, 153 each once a User Data Header is needed.
One character outside GSM-7 makes the whole message UCS-2, counted in UTF-16 code units: 70 units
fit one segment, 67 each when concatenated, and a segment boundary never splits a user-perceived
character (an extended grapheme cluster: a surrogate pair, a ZWJ emoji sequence, a flag, a skin
tone, a keycap, a letter and its combining accents) — the whole cluster moves to the next segment,
as Twilio's segment calculator does (a CR LF pair counts as two characters there, so here too).
This sits on the hot path of intake and of 100k-recipient campaigns, so every table is built at
import and the common cases are answered by C-level string operations.
"""

import re
from bisect import bisect_right
from collections.abc import Callable
from dataclasses import dataclass
from itertools import accumulate, repeat
from operator import add, gt, sub

import regex

MAX_BODY_CHARACTERS = 1600  # Twilio refuses longer bodies (error 21617)

GSM_7 = "GSM-7"
UCS_2 = "UCS-2"

GSM_SINGLE_SEGMENT, GSM_CONCATENATED_SEGMENT = 160, 153
UCS_SINGLE_SEGMENT, UCS_CONCATENATED_SEGMENT = 70, 67

# GSM 03.38 basic character set, as the Unicode characters it stands for (ESC at 0x1B left out).
GSM_BASIC = (
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
# The extension table: each is sent as ESC + one septet.
GSM_EXTENDED = "\f^{}\\[~]|€"

_NON_GSM = re.compile("[^" + re.escape(GSM_BASIC + GSM_EXTENDED) + "]")
_ASCII_GSM = bytes(code for code in range(128) if chr(code) in GSM_BASIC + GSM_EXTENDED)
_ASCII_EXTENDED = bytes(ord(character) for character in GSM_EXTENDED if character.isascii())
_ESCAPE = "\x1b"
_GRAPHEME = regex.compile(r"\X")  # extended grapheme clusters (user-perceived characters)
_GRAPHEME_CRLF_APART = regex.compile(r"\r(?=\n)|\X")  # CR LF counts as two, as Twilio's calculator does


def _smart_encoding_table() -> dict[str, str]:
    """Twilio's Smart Encoding substitutions (twilio.com/docs/messaging/services/smart-encoding-char-list)."""
    replacements = {
        '"': "\u00ab\u00bb\u201c\u201d\u02ba\u02ee\u201f\u275d\u275e\u301d\u301e\uff02\u201e",
        "'": "\u2018\u2019\u02bb\u02c8\u02bc\u02bd\u02b9\u201b\uff07\u00b4\u02ca\u0060\u02cb\u275b\u275c"
             "\u0313\u0314\ufe10\ufe11",
        "/": "\u00f7\u29f8\u0337\u0338\u2044\u2215\uff0f",
        "1/4": "\u00bc", "1/2": "\u00bd", "3/4": "\u00be",
        "\\": "\u29f9\u29f5\u20e5\ufe68\uff3c",
        "_": "\u0332\uff3f\u2017",
        "|": "\u20d2\u20d3\u2223\uff5c\u23b8\u23b9\u23d0\u239c\u239f",
        "-": "\u23bc\u23bd\u2015\ufe63\uff0d\u2010\u2043\u2013\u2014\u2022",
        "@": "\ufe6b\uff20",
        "$": "\ufe69\uff04",
        "!": "\u01c3\ufe15\ufe57\uff01",
        "!!": "\u203c",
        "#": "\ufe5f\uff03",
        "%": "\ufe6a\uff05",
        "&": "\ufe60\uff06",
        ",": "\u201a\u0326\ufe50\ufe51\uff0c\uff64\u3001",
        "(": "\u2768\u276a\ufe59\uff08\u27ee\u2985",
        ")": "\u2769\u276b\ufe5a\uff09\u27ef\u2986",
        "*": "\u204e\u2217\u229b\u2722\u2723\u2724\u2725\u2731\u2732\u2733\u273a\u273b\u273c\u273d\u2743"
             "\u2749\u274a\u274b\u29c6\ufe61\uff0a",
        "+": "\u02d6\ufe62\uff0b",
        ".": "\u3002\ufe52\uff0e\uff61",
        "...": "\u2026",
        ":": "\u02d0\u02f8\u2982\ua789\ufe13\uff1a",
        ";": "\u204f\ufe14\ufe54\uff1b",
        "<": "\ufe64\uff1c\u2039",
        "=": "\u0347\ua78a\ufe66\uff1d",
        ">": "\ufe65\uff1e\u203a",
        "?": "\ufe16\ufe56\uff1f",
        "^": "\u02c6\u0302\uff3e\u1dcd",
        "{": "\u2774\ufe5b\uff5b",
        "}": "\u2775\ufe5c\uff5d",
        "[": "\uff3b",
        "]": "\uff3d",
        "~": "\u02dc\u02f7\u0303\u0330\u0334\u223c\uff5e",
        " ": "\u00a0\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a\u202f\u205f\u3000"
             "\u0080\u008d\u0090\u009b\u009f\u2028\u2029\t",
        "": "\u0000\u0003\u0004\u0010\u0011\u0012\u0013\u0014\u0017\u0019\u200b\u200c\u2060\ufeff",
    }
    table = {character: replacement for replacement, characters in replacements.items() for character in characters}
    # Fullwidth digits and Latin capitals, and the small-capital letters, stand for their ASCII twins.
    table.update({chr(0xFF10 + digit): str(digit) for digit in range(10)})
    table.update({chr(0xFF21 + offset): chr(ord("A") + offset) for offset in range(26)})
    small_capitals = ("\u1d00\u0299\u1d04\u1d05\u1d07\ua730\u0262\u029c\u026a\u1d0a\u1d0b\u029f\u1d0d\u0274\u1d0f"
                      "\u1d18\u0280\ua731\u1d1b\u1d1c\u1d20\u1d21\u028f\u1d22")
    table.update(zip(small_capitals, "ABCDEFGHIJKLMNOPRSTUVWYZ"))
    return table


SMART_ENCODING = _smart_encoding_table()


@dataclass(frozen=True, slots=True)
class SegmentCount:
    """What a body costs to send as SMS.

    characters: code points of the body as given (the 1,600-character limit applies to these);
    code_units: septets (GSM-7) or UTF-16 units (UCS-2) after any Smart Encoding substitution;
    non_gsm_characters: each character that forced UCS-2, once, in order of first appearance.
    """

    characters: int
    encoding: str
    segments: int
    code_units: int
    non_gsm_characters: tuple[str, ...] = ()


def count_segments(body: str, *, smart_encoding: bool = False) -> SegmentCount:
    """Segments for `body`; an empty body is zero segments. Length limits are the caller's to enforce.

    With `smart_encoding`, Twilio's substitutions apply first, as on a Messaging Service that enables
    Smart Encoding; a character without a substitute (an emoji, Cyrillic) still makes the body UCS-2.
    """
    characters = len(body)
    escapes = _escapes_if_gsm(body)
    if escapes is None and smart_encoding:
        body = _smart_encode(body)
        escapes = _escapes_if_gsm(body)
    if escapes is None:
        return _ucs2(body, characters)
    return _gsm(body, characters, escapes)


def _escapes_if_gsm(body: str) -> int | None:
    """How many extension characters `body` has when all of it is GSM-7; None when any character is not."""
    if body.isascii():  # the usual case, answered on bytes
        raw = body.encode("ascii")
        if raw.translate(None, _ASCII_GSM):
            return None
        return len(raw) - len(raw.translate(None, _ASCII_EXTENDED))
    if _NON_GSM.search(body) is not None:
        return None
    return sum(map(body.count, GSM_EXTENDED))


def _smart_encode(body: str) -> str:
    """Substitute only the non-GSM characters present: far cheaper than translating every character."""
    for character in dict.fromkeys(_NON_GSM.findall(body)):
        replacement = SMART_ENCODING.get(character)
        if replacement is not None:
            body = body.replace(character, replacement)
    return body


def _gsm(body: str, characters: int, escapes: int) -> SegmentCount:
    septets = len(body) + escapes
    if septets <= GSM_SINGLE_SEGMENT:
        return SegmentCount(characters, GSM_7, 1 if septets else 0, septets)
    if not escapes:
        return SegmentCount(characters, GSM_7, -(-septets // GSM_CONCATENATED_SEGMENT), septets)
    stream = body  # the septets as sent: ESC before each extension character
    for character in GSM_EXTENDED:
        if character in stream:
            stream = stream.replace(character, _ESCAPE + character)
    segments = _segments(septets, GSM_CONCATENATED_SEGMENT, lambda last: stream[last] == _ESCAPE)
    return SegmentCount(characters, GSM_7, segments, septets)


def _ucs2(body: str, characters: int) -> SegmentCount:
    non_gsm_characters = tuple(dict.fromkeys(_NON_GSM.findall(body)))
    encoded = body.encode("utf-16-le", "surrogatepass")
    units = len(encoded) >> 1
    if units <= UCS_SINGLE_SEGMENT:
        return SegmentCount(characters, UCS_2, 1, units, non_gsm_characters)
    clusters = (_GRAPHEME_CRLF_APART if "\r\n" in body else _GRAPHEME).findall(body)
    if len(clusters) == units:  # every cluster one unit: nothing to keep together
        return SegmentCount(characters, UCS_2, -(-units // UCS_CONCATENATED_SEGMENT), units, non_gsm_characters)
    segments = _cluster_segments(body, clusters, units)
    return SegmentCount(characters, UCS_2, segments, units, non_gsm_characters)


def _cluster_segments(body: str, clusters: list[str], units: int) -> int:
    """Fill 67-unit segments with whole clusters. Where each cluster ends, in UTF-16 units, is computed
    at C speed (code points, plus the astral characters before that point), and each segment's last
    fitting cluster is found by bisection: the Python loop runs per segment, not per character."""
    astral_so_far = list(accumulate(map(gt, body, repeat("\uffff"))))
    ends = list(accumulate(map(len, clusters)))
    unit_ends = list(map(add, ends, map(astral_so_far.__getitem__, map(sub, ends, repeat(1)))))
    segments = position = 0
    while position < units:
        segments += 1
        fitting = bisect_right(unit_ends, position + UCS_CONCATENATED_SEGMENT)
        if fitting and unit_ends[fitting - 1] > position:
            position = unit_ends[fitting - 1]
        else:  # one cluster longer than a segment (a letter under dozens of accents) cannot stay whole
            position += UCS_CONCATENATED_SEGMENT
    return segments


def _segments(units: int, per_segment: int, starts_a_pair: Callable[[int], bool]) -> int:
    """Fill concatenated GSM-7 segments in order; an escape pair that would begin on a segment's last
    septet moves whole to the next segment."""
    segments = start = 0
    while start < units:
        segments += 1
        end = start + per_segment
        if end < units and starts_a_pair(end - 1):
            end -= 1
        start = end
    return segments
