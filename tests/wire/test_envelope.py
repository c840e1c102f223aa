from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wire import envelope
from wire.envelope import Envelope, EnvelopeError, parse

GOOD = Envelope(
    id="0123456789abcdef0123456789abcdef",
    sender="alice@acme.phone",
    recipient="bob@globex.phone",
    ts=1_764_400_000_000,
    header=b"\x01" * 40,
    body=b"\x02" * 272,
    prekey=b"\x03" * 100,
    ext={"note": "x"},
)


def mutate(**changes: object) -> bytes:
    obj = GOOD.to_json()
    for k, v in changes.items():
        if v is ...:
            obj.pop(k)
        else:
            obj[k] = v
    return json.dumps(obj).encode()


def test_round_trip() -> None:
    assert parse(GOOD.encode()) == GOOD
    plain = Envelope(GOOD.id, GOOD.sender, GOOD.recipient, GOOD.ts, b"", b"x")
    assert parse(plain.encode()) == plain


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"not json", "not JSON"),
        (b"[]", "JSON object"),
        (mutate(id=...), "lacks field(s): id"),
        (mutate(extra=1), "unknown field(s): extra"),
        (mutate(v=2), "unsupported envelope version"),
        (mutate(v=True), "unsupported envelope version"),
        (mutate(id="XYZ"), "32 lower-case hex"),
        (mutate(**{"from": "alice"}), "'from' is not a device id"),
        (mutate(to="bob@globex.phone/#"), "'to' is not a device id"),
        (mutate(ts=-1), "non-negative integer"),
        (mutate(ts=1.5), "non-negative integer"),
        (mutate(header="***"), "'header' is not valid base64"),
        (mutate(body=""), "'body' is empty"),
        (mutate(body=5), "'body' must be a base64 string"),
        (mutate(ext=[]), "'ext' must be an object"),
        (mutate(ext={"x": "y" * 5000}), "'ext' is over"),
        (b" " * (envelope.MAX_ENVELOPE_BYTES + 1), "over the 65536-byte limit"),
        (b"[" * 60_000, "not JSON"),
    ],
)
def test_rejections_say_why(data: bytes, reason: str) -> None:
    with pytest.raises(EnvelopeError, match=None) as info:
        parse(data)
    assert reason in str(info.value)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=2048))
def test_arbitrary_bytes_never_crash(data: bytes) -> None:
    try:
        parse(data)
    except EnvelopeError as exc:
        assert str(exc)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(sorted(GOOD.to_json())), json_values, max_size=9))
def test_arbitrary_json_objects_never_crash(obj: dict[str, object]) -> None:
    base = GOOD.to_json()
    base.update(obj)
    try:
        parse(json.dumps(base).encode())
    except EnvelopeError as exc:
        assert str(exc)
