"""How many SMS segments Twilio bills for a body (GSM-7 or UCS-2 encoding).

Deliberately independent of the product's own counter (shared/messaging/segments.py): the simulator
imitates an external service, so it must not share the product's mistakes.
"""

import regex

GSM7_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
GSM7_EXTENDED = frozenset("^{}\\[~]|€\f")
"""Sent as escape + character: two septets, never split across segments."""

GSM7_SINGLE, GSM7_PART = 160, 153
_CLUSTER = regex.compile(r"\r(?=\n)|\X")  # CR LF: two characters, as Twilio's calculator counts
UCS2_SINGLE, UCS2_PART = 70, 67


def count_segments(body: str) -> int:
    """Segments for ``body``; an empty body still costs one."""
    if all(char in GSM7_BASIC or char in GSM7_EXTENDED for char in body):
        units = [2 if char in GSM7_EXTENDED else 1 for char in body]
        return _pack(units, GSM7_SINGLE, GSM7_PART)
    # UCS-2 counts UTF-16 code units, and a user-perceived character (a grapheme cluster: an emoji
    # with its modifiers and joiners, a flag, a letter with its accents) stays in one segment.
    units = [len(cluster.encode("utf-16-le", "surrogatepass")) // 2 for cluster in _CLUSTER.findall(body)]
    return _pack(units, UCS2_SINGLE, UCS2_PART)


def _pack(units: list[int], single_limit: int, part_limit: int) -> int:
    """Fill segments greedily with indivisible characters of the given sizes."""
    if sum(units) <= single_limit:
        return 1
    segments, used = 1, 0
    for size in units:
        if used + size > part_limit and used:
            segments, used = segments + 1, 0
        while size > part_limit:  # a cluster longer than a segment cannot stay whole
            segments, size = segments + 1, size - part_limit
        used += size
    return segments
