"""Mandated client builds, as data: what a vendor ships and a government mandates.

A blanket tap at the relay captures every envelope and reads none of them, because the
keys live only in the devices. To make it read, the state must change *every client*
(or the directory every client trusts). A ``ClientBuild`` says which change a device
runs, with the keys baked into it:

* ``escrow``: each message key is also wrapped to the escrow public key, carried in the
  envelope's ``ext.escrow``;
* ``global-key``: the padded plaintext is also sealed under one key shared by every
  device, carried in ``ext.global``;
* ``ghost``: no change to the client at all (the directory lists a government device for
  every user; relay/kt.py and clients/kt.py), so its build is the standard one.

The cryptography is the E2EE library's (``clients.crypto``: ``escrow_wrap`` /
``escrow_open``, ``global_seal`` / ``global_open``); what the device adds to an envelope
is ``clients.backdoors.extensions``. This module holds no key operation: it names the
envelope fields, binds them to their envelope, and (de)serialises a build.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from wire.b64 import B64Error, b64decode, b64encode
from wire.envelope import Envelope

BACKDOORS = ("none", "escrow", "ghost", "global-key")
#: The envelope ``ext`` fields a mandated build adds (base64).
ESCROW_FIELD = "escrow"
GLOBAL_FIELD = "global"
KEY_BYTES = 32


def binding(envelope_id: str, sender: str, recipient: str) -> bytes:
    """Bind a back-door field to its envelope, so it cannot be moved to another one."""
    return f"{envelope_id}|{sender}|{recipient}".encode()


def binding_of(env: Envelope) -> bytes:
    return binding(env.id, env.sender, env.recipient)


def mandated_field(env: Envelope, name: str) -> bytes | None:
    """The decoded ``ext`` field ``name`` of a captured envelope, or None if it has none
    (or not one in strict base64: then there is nothing to try a key on)."""
    try:
        return b64decode(env.ext.get(name), f"ext.{name}")
    except B64Error:
        return None


@dataclass(frozen=True)
class ClientBuild:
    """The client build a device runs. The default build adds nothing to envelopes."""

    name: str = "standard"
    escrow_public_key: bytes | None = None  # raw X25519, baked into the build
    global_key: bytes | None = None  # 32 bytes, baked into the build

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
            escrow_public_key=_key(obj.get("escrow_public_key"), "escrow_public_key"),
            global_key=_key(obj.get("global_key"), "global_key"),
        )


def _b64(data: bytes | None) -> str | None:
    return None if data is None else b64encode(data)


def _key(text: Any, name: str) -> bytes | None:
    if text is None:
        return None
    return b64decode(text, f"client build field {name!r}", length=KEY_BYTES)


__all__ = [
    "BACKDOORS",
    "ESCROW_FIELD",
    "GLOBAL_FIELD",
    "ClientBuild",
    "binding",
    "binding_of",
    "mandated_field",
]
