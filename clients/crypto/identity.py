"""Device identities: an Ed25519 signing key plus an X25519 Diffie-Hellman key.

X3DH wants one identity key that both signs (the signed prekey) and does
Diffie-Hellman. Signal gets that from XEdDSA (signatures made with the X25519 key);
``cryptography`` has no XEdDSA, so each device has *two* identity keys, an Ed25519 key
that only signs and an X25519 key that only does DH, and its public identity is the
pair. Everything that binds to an identity (the X3DH associated data, safety numbers,
fingerprints) binds to both halves, so neither can be swapped on its own.

Also here: the X25519 helpers the protocol uses on keys from outside, which refuse a
non-canonical encoding (see ``check_x25519_public``).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from wire.b64 import b64encode

from . import state
from .errors import BadSignature, MalformedInput

IDENTITY_VERSION = 1
KEY_BYTES = 32
SIGNATURE_BYTES = 64
ENCODED_IDENTITY_BYTES = 1 + 2 * KEY_BYTES
_P25519 = 2**255 - 19


def check_x25519_public(raw: bytes, what: str) -> bytes:
    """Refuse anything but a canonical X25519 public key (32 bytes, value below p).

    X25519 ignores the top bit of a public key (RFC 7748 §5), so without this check a
    flipped top bit in a prekey message's ephemeral key would give the *same* shared
    secret and go unnoticed. Our own encoder never sets it, so refusing it costs nothing
    and makes every bit of every key we accept meaningful.
    """
    if len(raw) != KEY_BYTES:
        raise MalformedInput(f"{what} must be {KEY_BYTES} bytes, not {len(raw)}")
    if int.from_bytes(raw, "little") >= _P25519:
        raise MalformedInput(f"{what} is not a canonical X25519 public key")
    return raw


def x25519_public_bytes(private: X25519PrivateKey) -> bytes:
    return private.public_key().public_bytes_raw()


def dh(private: X25519PrivateKey, public: bytes) -> bytes:
    """X25519(private, public). MalformedInput if the peer key is of low order (the
    shared secret would be all zeros, which ``cryptography`` refuses)."""
    try:
        return private.exchange(X25519PublicKey.from_public_bytes(public))
    except ValueError:
        raise MalformedInput("X25519 with that public key gives no shared secret") from None


@dataclass(frozen=True)
class PublicIdentity:
    """A device's public identity: its Ed25519 signing key and its X25519 DH key."""

    signing_key: bytes  # Ed25519 public key, 32 bytes
    dh_key: bytes  # X25519 public key, 32 bytes
    _verifier: Ed25519PublicKey | None = field(default=None, compare=False, repr=False)

    def encode(self) -> bytes:
        """``0x01 || Ed25519 public (32) || X25519 public (32)``: 65 bytes."""
        return bytes([IDENTITY_VERSION]) + self.signing_key + self.dh_key

    @classmethod
    def decode(cls, data: bytes) -> PublicIdentity:
        if len(data) != ENCODED_IDENTITY_BYTES or data[0] != IDENTITY_VERSION:
            raise MalformedInput(
                f"an encoded identity is {ENCODED_IDENTITY_BYTES} bytes starting with "
                f"{IDENTITY_VERSION}; got {len(data)} bytes"
            )
        signing = data[1 : 1 + KEY_BYTES]
        dh_key = check_x25519_public(data[1 + KEY_BYTES :], "identity DH key")
        try:
            verifier = Ed25519PublicKey.from_public_bytes(signing)
        except ValueError:
            raise MalformedInput("identity signing key is not an Ed25519 public key") from None
        return cls(signing, dh_key, verifier)

    def verify(self, signature: bytes, message: bytes, what: str) -> None:
        """BadSignature unless ``signature`` is this identity's Ed25519 signature."""
        verifier = self._verifier or Ed25519PublicKey.from_public_bytes(self.signing_key)
        try:
            verifier.verify(signature, message)
        except InvalidSignature:
            raise BadSignature(
                f"{what}: signature does not verify under the identity key"
            ) from None

    def fingerprint(self) -> str:
        """SHA-256 of the encoded identity, in hex: a stable short name for logs and UIs.

        For comparing identities between two people use ``safety_number`` instead.
        """
        return hashlib.sha256(self.encode()).hexdigest()


class IdentityKeyPair:
    """The private half: signs signed prekeys, and is the X25519 identity in X3DH."""

    __slots__ = ("dh_private", "public", "signing_private")

    def __init__(self, signing_private: Ed25519PrivateKey, dh_private: X25519PrivateKey) -> None:
        self.signing_private = signing_private
        self.dh_private = dh_private
        signing_public = signing_private.public_key()
        self.public = PublicIdentity(
            signing_public.public_bytes_raw(), x25519_public_bytes(dh_private), signing_public
        )

    @classmethod
    def generate(cls) -> IdentityKeyPair:
        return cls(Ed25519PrivateKey.generate(), X25519PrivateKey.generate())

    def sign(self, message: bytes) -> bytes:
        return self.signing_private.sign(message)

    def to_json(self) -> dict[str, Any]:
        return {
            "signing": b64encode(self.signing_private.private_bytes_raw()),
            "dh": b64encode(self.dh_private.private_bytes_raw()),
        }

    @classmethod
    def from_json(cls, obj: Any) -> IdentityKeyPair:
        return cls(
            Ed25519PrivateKey.from_private_bytes(state.get_bytes(obj, "signing", KEY_BYTES)),
            X25519PrivateKey.from_private_bytes(state.get_bytes(obj, "dh", KEY_BYTES)),
        )
