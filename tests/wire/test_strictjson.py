"""wire/strictjson.py: the one strict reader of outside JSON (issue 12, point 9)."""

from __future__ import annotations

import contextlib
import json
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wire.strictjson import MAX_DEPTH, StrictJSONError, loads, loads_object

VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-(10**39), 10**39)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                 max_size=4),
    max_leaves=20,
)  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(VALUES)
def test_what_json_dumps_writes_within_bounds_reads_back(value: object) -> None:
    text = json.dumps(value)
    assert loads(text, max_bytes=1 << 20) == json.loads(text)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_arbitrary_bytes_are_a_value_or_a_strict_json_error(data: bytes) -> None:
    try:
        loads(data, max_bytes=1 << 20)
    except StrictJSONError as exc:
        assert str(exc).startswith("input ")


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("NaN", "NaN is not a JSON number"),
        ('{"a": -Infinity}', "-Infinity is not a JSON number"),
        ("[1e400]", "the number 1e400 is out of range"),
        ("9" * 41, "an integer of 41 digits"),
        ("-" + "9" * 5000, "an integer of 5000 digits"),
        ("[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1), f"nested more than {MAX_DEPTH}"),
        ('{"a": 1, "a": 2}', "repeats the key 'a'"),
        ('"\\ud800"', "half a surrogate pair"),
        ('"\\udc00\\ud800"', "half a surrogate pair"),
        ("{", "is not JSON: Expecting"),
    ],
)
def test_each_rule_is_named(text: str, why: str) -> None:
    with pytest.raises(StrictJSONError, match=None) as info:
        loads(text, "input", max_bytes=1 << 20)
    assert why in str(info.value), str(info.value)


def test_the_limits_are_inclusive_and_exact() -> None:
    assert loads("9" * 40, max_bytes=100) == int("9" * 40)
    deep = "[" * MAX_DEPTH + "]" * MAX_DEPTH
    assert loads(deep, max_bytes=1000) is not None
    assert loads('"\\ud83d\\ude00"', max_bytes=100) == "\U0001f600"
    assert loads('"[[[[[" ', max_bytes=100) == "[[[[["  # brackets in strings do not nest
    with pytest.raises(StrictJSONError, match="over the 9-byte limit"):
        loads("1234567890", max_bytes=9)
    with pytest.raises(StrictJSONError, match="must be a JSON object, not an array"):
        loads_object("[]", max_bytes=10)
    with pytest.raises(StrictJSONError, match="not UTF-8"):
        loads(b'"\xff"', max_bytes=10)


def test_hostile_shapes_cost_one_linear_scan() -> None:
    """A megabyte of brackets, of escapes, of nested strings: refused or read in a
    fraction of a second (the depth is counted before json.loads could recurse)."""
    for text in (
        "[" * 1_000_000,
        '["' + "\\\\" * 500_000 + '"]',
        "[" * 31 + '"' + "[" * 900_000 + '"' + "]" * 31,
        '["' + "\\u0041" * 150_000 + '"]',
    ):
        t0 = time.monotonic()
        with contextlib.suppress(StrictJSONError):
            loads(text, max_bytes=2_000_000)
        assert time.monotonic() - t0 < 2.0
