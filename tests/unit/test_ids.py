"""shared.ids: 26 Crockford base-32 digits of a 128-bit value, ordered as the values are."""

import hashlib
import random
import time

import pytest

from shared.ids import _ALPHABET, _encode, keyed_id, new_id


def digits_of(value: int) -> str:
    """The value's 26 base-32 digits, most significant first, by repeated division."""
    digits = []
    for _ in range(26):
        value, digit = divmod(value, 32)
        digits.append(_ALPHABET[digit])
    return "".join(reversed(digits))


def value_of(identifier: str) -> int:
    return sum(_ALPHABET.index(digit) * 32 ** power for power, digit in enumerate(reversed(identifier.split("_")[1])))


@pytest.mark.parametrize("value", [0, 1, 31, 32, 2**80 - 1, 2**127, 2**128 - 1])
def test_an_id_is_its_values_26_digits(value):
    assert _encode("x", value) == f"x_{digits_of(value)}"


def test_random_values_are_their_26_digits():
    for value in (random.getrandbits(128) for _ in range(10_000)):
        assert _encode("x", value) == f"x_{digits_of(value)}"


def test_keyed_ids_are_the_digits_of_the_keys_hash():
    for key in ["", "a", "campaign:é✓", *(str(random.random()) for _ in range(500))]:
        value = int.from_bytes(hashlib.sha256(key.encode()).digest()[:16], "big")
        assert keyed_id("cmp", key) == f"cmp_{digits_of(value)}"


def test_new_ids_carry_their_milliseconds_and_sort_in_time_order():
    before = int(time.time() * 1000)
    first = new_id("msg")
    time.sleep(0.002)
    second = new_id("msg")
    after = int(time.time() * 1000)

    assert len(first) == len("msg_") + 26 and set(first[4:]) <= set(_ALPHABET)
    assert before <= value_of(first) >> 80 <= value_of(second) >> 80 <= after and first < second
