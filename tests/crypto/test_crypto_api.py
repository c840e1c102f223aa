"""The public surface: exports, errors, Sealed, and the escrow hook (open_body)."""

from __future__ import annotations

import dataclasses
import inspect

import pytest

import clients.crypto as crypto
from clients.crypto import (
    CryptoError,
    DecryptError,
    DeviceCrypto,
    PublicIdentity,
    Sealed,
    errors,
    open_body,
    safety_number,
)
from tests.crypto.crypto_helpers import ALICE, BOB, talking_pair

BRIEF_ERRORS = [
    "CryptoError",
    "BadSignature",
    "ReusedPrekey",
    "UnknownPrekey",
    "DecryptError",
    "ReplayError",
    "TooManySkipped",
    "UnknownSession",
    "StateVersionError",
    "PlaintextTooLong",
]


def test_exports() -> None:
    for name in (
        "DeviceCrypto",
        "Sealed",
        "PublicIdentity",
        "safety_number",
        "open_body",
        "pad",
        "unpad",
        "BUCKETS",
    ):
        assert hasattr(crypto, name), name
    for name in BRIEF_ERRORS:
        assert issubclass(getattr(errors, name), CryptoError), name


def test_every_error_class_is_a_crypto_error_with_a_docstring() -> None:
    classes = [
        c for _, c in inspect.getmembers(errors, inspect.isclass) if issubclass(c, Exception)
    ]
    assert len(classes) >= len(BRIEF_ERRORS)
    for cls in classes:
        assert issubclass(cls, CryptoError)
        assert cls.__doc__


def test_sealed_shape() -> None:
    fields = {f.name: f for f in dataclasses.fields(Sealed)}
    assert list(fields) == ["header", "body", "prekey", "message_key", "associated_data"]
    assert not fields["message_key"].compare and not fields["message_key"].repr
    alice, _ = talking_pair()
    sealed = alice.encrypt(BOB, b"x")
    wire_copy = Sealed(sealed.header, sealed.body, sealed.prekey)
    assert wire_copy == sealed  # the escrow-only fields do not take part in equality
    assert sealed.message_key is not None
    assert sealed.message_key.hex() not in repr(sealed)
    with pytest.raises(dataclasses.FrozenInstanceError):
        sealed.body = b""  # type: ignore[misc]


def test_open_body_is_what_an_escrow_holder_can_do() -> None:
    alice, bob = talking_pair()
    sealed = alice.encrypt(BOB, b"wrapped key reads this")
    assert sealed.message_key is not None and sealed.associated_data is not None
    assert open_body(sealed.message_key, sealed.associated_data, sealed.header, sealed.body) == (
        b"wrapped key reads this"
    )
    # ...that message only: the next message's key is a different one.
    nxt = alice.encrypt(BOB, b"next")
    with pytest.raises(DecryptError):
        open_body(sealed.message_key, sealed.associated_data, nxt.header, nxt.body)
    with pytest.raises(DecryptError):
        open_body(sealed.message_key, b"other ad", sealed.header, sealed.body)
    # The recipient is unaffected by someone else opening its message.
    assert bob.decrypt(ALICE, Sealed(sealed.header, sealed.body, None)) == (
        b"wrapped key reads this"
    )


def test_public_identity_api() -> None:
    device = DeviceCrypto.create(ALICE, one_time_prekeys=0)
    identity = device.identity
    assert isinstance(identity, PublicIdentity)
    assert PublicIdentity.decode(identity.encode()) == identity
    assert isinstance(identity.fingerprint(), str)
    assert safety_number(identity, identity) == device.safety_number(identity)
