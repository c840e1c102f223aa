"""The library's public recipes: the one HPKE suite (seal_to / open_sealed) and the
mandated back doors' cryptography (escrow, global key).

The suite and the byte layouts are wire formats (handover records, journal records, the
``ext.escrow`` / ``ext.global`` envelope fields), so they are pinned here against
cryptography's HPKE and ChaCha20-Poly1305 used directly with the RFC 9180 parameters.
"""

from __future__ import annotations

import struct

import pytest
from cryptography.hazmat.primitives import hpke
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

import clients.crypto as crypto
from clients.crypto import (
    CryptoError,
    DecryptError,
    DeviceCrypto,
    MalformedInput,
    Sealed,
    escrow_open,
    escrow_wrap,
    global_open,
    global_seal,
    new_escrow_key,
    new_global_key,
    open_body,
    open_sealed,
    pad,
    seal_to,
    unpad,
)

ALICE, BOB = "alice@acme.phone", "bob@globex.phone"
RFC9180_SUITE = hpke.Suite(hpke.KEM.X25519, hpke.KDF.HKDF_SHA256, hpke.AEAD.CHACHA20_POLY1305)
BINDING = b"0123456789abcdef0123456789abcdef|alice@acme.phone|bob@globex.phone"


def public(key: X25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def first_message() -> tuple[Sealed, DeviceCrypto]:
    alice = DeviceCrypto.create(ALICE, one_time_prekeys=1)
    bob = DeviceCrypto.create(BOB, one_time_prekeys=1)
    pub = bob.publish_material()
    alice.start_session(
        BOB,
        {
            "device": BOB,
            "identity": pub["identity"],
            "signed_prekey": pub["signed_prekey"],
            "one_time_prekey": pub["one_time_prekeys"][0],
        },
    )
    return alice.encrypt(BOB, b"meet at noon"), bob


def test_the_public_layer_exports_the_recipes() -> None:
    for name in ("seal_to", "open_sealed", "escrow_wrap", "escrow_open", "global_seal",
                 "global_open", "new_escrow_key", "new_global_key", "Bundle", "PrekeyMessage"):
        assert name in crypto.__all__, name
        assert hasattr(crypto, name), name


def test_seal_to_is_rfc9180_with_the_one_suite() -> None:
    key = X25519PrivateKey.generate()
    sealed = seal_to(public(key), b"record", info=b"label")
    assert RFC9180_SUITE.decrypt(sealed, key, info=b"label") == b"record"
    theirs = RFC9180_SUITE.encrypt(b"record", key.public_key(), info=b"label")
    assert open_sealed(key, theirs, info=b"label") == b"record"


def test_open_sealed_refuses_another_key_label_or_altered_bytes() -> None:
    key = X25519PrivateKey.generate()
    sealed = seal_to(public(key), b"record", info=b"label")
    altered = sealed[:-1] + bytes([sealed[-1] ^ 1])
    for attempt in (
        lambda: open_sealed(X25519PrivateKey.generate(), sealed, info=b"label"),
        lambda: open_sealed(key, sealed, info=b"another label"),
        lambda: open_sealed(key, altered, info=b"label"),
        lambda: open_sealed(key, b"short", info=b"label"),
    ):
        with pytest.raises(DecryptError):
            attempt()
    with pytest.raises(MalformedInput):
        seal_to(b"\x00" * 31, b"record", info=b"label")


def test_escrow_round_trip_and_layout() -> None:
    sealed, bob = first_message()
    escrow = new_escrow_key()
    wrapped = escrow_wrap(public(escrow), sealed, binding=BINDING)
    assert escrow_open(escrow, wrapped, sealed.header, sealed.body, binding=BINDING) == (
        b"meet at noon"
    )
    # The layout: HPKE to the escrow key, info "doormat escrow LEAF v1|<binding>", of
    # len(message key) as 2 bytes big-endian, the message key, the associated data.
    leaf = RFC9180_SUITE.decrypt(wrapped, escrow, info=b"doormat escrow LEAF v1|" + BINDING)
    assert sealed.message_key is not None and sealed.associated_data is not None
    assert leaf == (
        struct.pack(">H", len(sealed.message_key)) + sealed.message_key + sealed.associated_data
    )
    assert open_body(sealed.message_key, sealed.associated_data, sealed.header, sealed.body) == (
        bob.decrypt(ALICE, sealed)
    )


def test_escrow_refusals() -> None:
    sealed, _ = first_message()
    escrow = new_escrow_key()
    wrapped = escrow_wrap(public(escrow), sealed, binding=BINDING)
    with pytest.raises(CryptoError):  # moved to another envelope
        escrow_open(escrow, wrapped, sealed.header, sealed.body, binding=BINDING + b"x")
    with pytest.raises(CryptoError):  # another key
        escrow_open(new_escrow_key(), wrapped, sealed.header, sealed.body, binding=BINDING)
    with pytest.raises(ValueError, match="message key of a fresh encryption"):
        escrow_wrap(public(escrow), Sealed(sealed.header, sealed.body, None), binding=BINDING)


def test_global_key_round_trip_and_layout() -> None:
    key = new_global_key()
    blob = global_seal(key, b"meet at noon", binding=BINDING)
    assert global_open(key, blob, binding=BINDING) == b"meet at noon"
    # nonce (12 bytes) || ChaCha20-Poly1305 of the padded plaintext, AD = the binding
    padded = ChaCha20Poly1305(key).decrypt(blob[:12], blob[12:], BINDING)
    assert padded == pad(b"meet at noon") and unpad(padded) == b"meet at noon"
    for bad_key, bad_blob, bad_binding in (
        (new_global_key(), blob, BINDING),
        (key, blob, BINDING + b"x"),
        (key, blob[:12], BINDING),
        (b"short", blob, BINDING),
    ):
        with pytest.raises(CryptoError):
            global_open(bad_key, bad_blob, binding=bad_binding)
