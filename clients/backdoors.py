"""Mandated client builds: the three back doors a blanket tap needs.

A blanket tap at the relay captures every envelope and reads none of them, because the
keys live only in the devices. To make it read, the state must change *every client*
(or the directory every client trusts). Each back door here is that change, in the
client code path that builds an envelope - not a flag the tap checks:

* ``escrow`` (LEAF-style, after Clipper): each message key, with the session's
  associated data, is wrapped to the government's escrow public key with HPKE (RFC 9180,
  X25519 / HKDF-SHA256 / ChaCha20-Poly1305) and carried in ``ext.escrow``. Whoever holds
  the escrow private key opens every message - the government, or whoever steals it.
* ``global-key``: the client build contains one symmetric key shared by every device;
  the padded plaintext is also sealed under it (ChaCha20-Poly1305) in ``ext.global``.
  Anyone with one device image (or the app binary) has it.
* ``ghost``: no change to the envelope at all. The directory lists a government device
  for every user and unmodified clients fan out to it as to any device (relay side and
  key transparency catch it; see relay/kt.py and clients/kt.py).

``ClientBuild`` is what a device runs; ``open_escrow`` and ``open_global`` are what a key
holder does with a captured envelope.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hpke
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from clients.crypto import Sealed, open_body, pad, unpad
from clients.crypto.errors import CryptoError
from wire.b64 import B64Error, b64decode, b64encode
from wire.envelope import Envelope

BACKDOORS = ("none", "escrow", "ghost", "global-key")

_SUITE = hpke.Suite(hpke.KEM.X25519, hpke.KDF.HKDF_SHA256, hpke.AEAD.CHACHA20_POLY1305)
_ESCROW_INFO = b"doormat escrow LEAF v1"
_GLOBAL_NONCE = 12


def _binding(envelope_id: str, sender: str, recipient: str) -> bytes:
    """Bind a back-door field to its envelope, so it cannot be moved to another one."""
    return f"{envelope_id}|{sender}|{recipient}".encode()


@dataclass(frozen=True)
class ClientBuild:
    """The client build a device runs. The default build adds nothing to envelopes."""

    name: str = "standard"
    escrow_public_key: bytes | None = None  # raw X25519, baked into the build
    global_key: bytes | None = None  # 32 bytes, baked into the build

    def extensions(
        self, envelope_id: str, sender: str, recipient: str, plaintext: bytes, sealed: Sealed
    ) -> dict[str, Any]:
        """The ``ext`` fields this build adds to the envelope for ``sealed``."""
        ext: dict[str, Any] = {}
        binding = _binding(envelope_id, sender, recipient)
        if self.escrow_public_key is not None:
            if sealed.message_key is None or sealed.associated_data is None:
                raise ValueError("escrow build needs the message key of a fresh encryption")
            leaf = (
                struct.pack(">H", len(sealed.message_key))
                + sealed.message_key
                + sealed.associated_data
            )
            wrapped = _SUITE.encrypt(
                leaf,
                X25519PublicKey.from_public_bytes(self.escrow_public_key),
                info=_ESCROW_INFO + b"|" + binding,
            )
            ext["escrow"] = b64encode(wrapped)
        if self.global_key is not None:
            nonce = os.urandom(_GLOBAL_NONCE)
            sealed_copy = ChaCha20Poly1305(self.global_key).encrypt(
                nonce, pad(plaintext), binding
            )
            ext["global"] = b64encode(nonce + sealed_copy)
        return ext

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "escrow_public_key": _b64(self.escrow_public_key),
            "global_key": _b64(self.global_key),
        }

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> ClientBuild:
        return cls(
            name=str(obj.get("name", "standard")),
            escrow_public_key=_unb64(obj.get("escrow_public_key"), "escrow_public_key"),
            global_key=_unb64(obj.get("global_key"), "global_key"),
        )


def _b64(data: bytes | None) -> str | None:
    return None if data is None else b64encode(data)


def _unb64(text: Any, name: str) -> bytes | None:
    return None if text is None else b64decode(text, f"client build field {name!r}")


def _field(env: Envelope, name: str) -> bytes | None:
    try:
        return b64decode(env.ext.get(name), f"ext.{name}")
    except B64Error:
        return None


def open_escrow(env: Envelope, escrow_private_key: X25519PrivateKey) -> bytes | None:
    """What the escrow key holder does: unwrap the message key, open the body."""
    wrapped = _field(env, "escrow")
    if wrapped is None:
        return None
    try:
        leaf = _SUITE.decrypt(
            wrapped,
            escrow_private_key,
            info=_ESCROW_INFO + b"|" + _binding(env.id, env.sender, env.recipient),
        )
        (n,) = struct.unpack(">H", leaf[:2])
        message_key, associated_data = leaf[2 : 2 + n], leaf[2 + n :]
        return open_body(message_key, associated_data, env.header, env.body)
    except (InvalidTag, ValueError, struct.error, CryptoError):
        # Any failure means "this key does not open this envelope"; the caller counts.
        return None


def open_global(env: Envelope, global_key: bytes) -> bytes | None:
    """What anyone holding the global key does with a captured envelope."""
    blob = _field(env, "global")
    if blob is None or len(blob) <= _GLOBAL_NONCE:
        return None
    try:
        padded = ChaCha20Poly1305(global_key).decrypt(
            blob[:_GLOBAL_NONCE], blob[_GLOBAL_NONCE:], _binding(env.id, env.sender, env.recipient)
        )
        return unpad(padded)
    except (InvalidTag, ValueError, CryptoError):
        return None


def new_escrow_key() -> X25519PrivateKey:
    return X25519PrivateKey.generate()


def new_global_key() -> bytes:
    return ChaCha20Poly1305.generate_key()
