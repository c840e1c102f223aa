"""Padding buckets: exact sizes, unambiguous removal, the limit, and the envelope limit."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from clients.crypto import (
    BUCKETS,
    MAX_PLAINTEXT,
    PaddingError,
    PlaintextTooLong,
    pad,
    unpad,
)
from tests.crypto.crypto_helpers import ALICE, BOB, bundle_of, talking_pair
from wire.envelope import MAX_ENVELOPE_BYTES, MAX_EXT_BYTES, Envelope, parse


def test_buckets() -> None:
    assert BUCKETS == (256, 512, 1024, 2048, 4096, 8192, 16384, 32768)
    assert MAX_PLAINTEXT == 32767


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=3000) | st.binary(max_size=40).map(lambda b: b + b"\x80\x00\x00"))
def test_pad_round_trips_to_the_smallest_bucket(data: bytes) -> None:
    padded = pad(data)
    assert len(padded) == min(b for b in BUCKETS if b > len(data))
    assert unpad(padded) == data


@pytest.mark.parametrize(
    ("length", "bucket"),
    [(0, 256), (255, 256), (256, 512), (511, 512), (512, 1024), (32767, 32768)],
)
def test_bucket_edges(length: int, bucket: int) -> None:
    padded = pad(b"\x80" * length)
    assert len(padded) == bucket
    assert unpad(padded) == b"\x80" * length


def test_too_long_is_refused() -> None:
    with pytest.raises(PlaintextTooLong, match="32767"):
        pad(bytes(MAX_PLAINTEXT + 1))


@pytest.mark.parametrize(
    "bad",
    [
        b"",
        bytes(255),
        bytes(256),  # no marker
        b"abc\x80" + bytes(251) + b"\x01",  # something after the marker
        b"abc\x80" + bytes(252) + b"\x00",  # not a bucket size (257)
    ],
)
def test_unpad_refuses_what_pad_cannot_produce(bad: bytes) -> None:
    with pytest.raises(PaddingError):
        unpad(bad)


def test_encrypting_too_much_is_refused_without_state_change() -> None:
    alice, bob = talking_pair()
    before = alice.to_bytes()
    with pytest.raises(PlaintextTooLong):
        alice.encrypt(BOB, bytes(MAX_PLAINTEXT + 1))
    assert alice.to_bytes() == before
    sealed = alice.encrypt(BOB, bytes(MAX_PLAINTEXT))
    assert bob.decrypt(ALICE, sealed) == bytes(MAX_PLAINTEXT)


def test_relay_sees_only_the_bucket() -> None:
    alice, _ = talking_pair()
    sizes = {len(alice.encrypt(BOB, b"x" * n).body) for n in (0, 1, 17, 100, 255)}
    assert sizes == {256 + 16}
    assert len(alice.encrypt(BOB, b"x" * 256).body) == 512 + 16


def test_largest_envelope_fits_the_relay_limit() -> None:
    """The largest bucket, with a prekey message and the largest ``ext`` the relay
    allows, still encodes under MAX_ENVELOPE_BYTES and parses."""
    alice, bob = talking_pair()
    alice.start_session(BOB, bundle_of(bob, index=1))  # so the message carries a prekey message
    sealed = alice.encrypt(BOB, b"\xff" * MAX_PLAINTEXT)
    assert sealed.prekey is not None
    ext = {"pad": "x" * (MAX_EXT_BYTES - len(json.dumps({"pad": ""})))}
    assert len(json.dumps(ext)) == MAX_EXT_BYTES
    envelope = Envelope(
        id="f" * 32,
        sender=ALICE,
        recipient=BOB,
        ts=2**53 - 1,
        header=sealed.header,
        body=sealed.body,
        prekey=sealed.prekey,
        ext=ext,
    )
    encoded = envelope.encode()
    assert len(encoded) <= MAX_ENVELOPE_BYTES
    assert parse(encoded) == envelope
