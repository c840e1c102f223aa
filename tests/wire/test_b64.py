"""wire.b64: the one strict base64 decoder refuses every spelling but the canonical one,
and says which field was wrong."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given
from hypothesis import strategies as st

from wire.b64 import B64Error, b64decode, b64encode


@given(st.binary(max_size=200))
def test_round_trip(data: bytes) -> None:
    text = b64encode(data)
    assert text == base64.b64encode(data).decode("ascii")
    assert b64decode(text, "x") == data


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        (7, "must be a base64 string"),
        (None, "must be a base64 string"),
        (b"AAAA", "must be a base64 string"),
        ("AA=A", "is not valid base64"),
        ("AAA", "is not valid base64"),  # missing padding
        ("AA AA", "is not valid base64"),  # a character outside the alphabet
        ("QUJD\n", "is not valid base64"),
        ("h\u00e9", "is not valid base64"),
        ("QR==", "is not canonical base64"),  # 'Q' == 'QQ==': stray low bits in 'R'
        ("AAB=", "is not canonical base64"),
    ],
)
def test_refusals_name_the_field(value: object, problem: str) -> None:
    with pytest.raises(B64Error) as info:
        b64decode(value, "'root'")
    assert str(info.value) == f"'root' {problem}"
    assert info.value.field == "'root'"
    assert isinstance(info.value, ValueError)


def test_length() -> None:
    assert b64decode(b64encode(b"k" * 32), "key", length=32) == b"k" * 32
    with pytest.raises(B64Error, match=r"^key is 31 bytes, expected 32 bytes$"):
        b64decode(b64encode(b"k" * 31), "key", length=32)


def test_plain_b64decode_would_have_accepted_what_is_refused() -> None:
    """The point of the canonical check: two texts, one byte string."""
    assert base64.b64decode("QR==", validate=True) == base64.b64decode("QQ==") == b"A"
    assert b64decode("QQ==", "x") == b"A"
