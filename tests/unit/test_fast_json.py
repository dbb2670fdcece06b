"""shared.fast_json reads what the json module reads, as the json module reads it."""

import json
import math

import pytest

from shared import fast_json

TEXTS = ['{"name": "Zoë \\"Z\\"\\t東京 ✓", "n": 12, "ok": true, "none": null}', "[1, 2.5, -0.0, 1e300]",
         '{"big": 1180591620717411303425}', "[18446744073709551615, 18446744073709551616, -9223372036854775809]",
         '{"digits in text": "1234567890123456789012", "n": 1}', '{"a": 1, "a": 2}', '"\\ud83d\\ude00"', "[]"]


@pytest.mark.parametrize("text", TEXTS)
def test_loads_reads_text_and_bytes_as_json_does(text):
    read = json.loads(text)
    assert fast_json.loads(text) == fast_json.loads(text.encode()) == read
    assert repr(fast_json.loads(text)) == repr(read)  # an integer stays an integer, never a rounded float


def test_loads_reads_nan_as_json_does_where_orjson_refuses_it():
    assert math.isnan(fast_json.loads('{"x": NaN}')["x"])


def test_loads_refuses_what_json_refuses():
    with pytest.raises(json.JSONDecodeError):
        fast_json.loads("{not json")
