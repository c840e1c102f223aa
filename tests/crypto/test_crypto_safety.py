"""Safety numbers, fingerprints and the encoding of public identities."""

from __future__ import annotations

import hashlib

import pytest

from clients.crypto import (
    DeviceCrypto,
    MalformedInput,
    PublicIdentity,
    format_safety_number,
    safety_number,
)
from clients.crypto.safety import _half
from tests.crypto.crypto_helpers import talking_pair


def test_same_on_both_sides_and_sixty_digits() -> None:
    alice, bob = talking_pair()
    number = alice.safety_number(bob.identity)
    assert number == bob.safety_number(alice.identity)
    assert len(number) == 60 and number.isdigit()
    assert number == safety_number(bob.identity, alice.identity)
    assert len(format_safety_number(number).split()) == 12


def test_changes_when_either_identity_changes() -> None:
    alice, bob = talking_pair()
    number = alice.safety_number(bob.identity)
    new_bob = DeviceCrypto.create("bob@globex.phone", one_time_prekeys=0)
    new_alice = DeviceCrypto.create("alice@acme.phone", one_time_prekeys=0)
    assert alice.safety_number(new_bob.identity) != number
    assert new_alice.safety_number(bob.identity) != number
    # Each half of an identity counts: swapping only the signing or only the DH key
    # changes the number too.
    b = bob.identity
    other = new_bob.identity
    only_signing = PublicIdentity(other.signing_key, b.dh_key)
    only_dh = PublicIdentity(b.signing_key, other.dh_key)
    assert alice.safety_number(only_signing) != number
    assert alice.safety_number(only_dh) != number


def test_halves_follow_the_signal_construction() -> None:
    """Each half: SHA-512 iterated 5200 times, 30 bytes -> six 5-digit groups; the two
    halves in sorted order."""
    alice, bob = talking_pair()
    key = alice.identity.encode()
    digest = hashlib.sha512(b"\x00\x00" + key + b"doormat safety number v1").digest()
    for _ in range(5200):
        digest = hashlib.sha512(digest + key).digest()
    expected = "".join(
        f"{int.from_bytes(digest[i : i + 5], 'big') % 100000:05d}" for i in range(0, 30, 5)
    )
    assert _half(alice.identity) == expected
    halves = sorted([expected, _half(bob.identity)])
    assert alice.safety_number(bob.identity) == halves[0] + halves[1]


def test_identity_encoding_and_fingerprint() -> None:
    alice, bob = talking_pair()
    encoded = alice.identity.encode()
    assert len(encoded) == 65 and encoded[0] == 1
    assert PublicIdentity.decode(encoded) == alice.identity
    assert alice.identity.fingerprint() != bob.identity.fingerprint()
    assert len(alice.identity.fingerprint()) == 64
    for bad in (encoded[:-1], b"\x02" + encoded[1:], encoded[:33] + b"\xff" * 32):
        with pytest.raises(MalformedInput):
            PublicIdentity.decode(bad)
