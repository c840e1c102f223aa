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

import json
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

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


# -- what the vendor signs, and what a device checks before it installs a build ---------

#: Domain separation: a build signature is never a signature of anything else.
BUILD_SIGNATURE_CONTEXT = b"doormat client build v1\n"


class BuildError(ValueError):
    """A build a device refuses: unsigned, wrongly signed, not newer, malformed."""


def build_document(build: ClientBuild, version: int) -> dict[str, Any]:
    """The build as the vendor ships it: its fields and its version (1, 2, ...)."""
    return {**build.to_json(), "version": version}


def build_message(document: dict[str, Any]) -> bytes:
    """The bytes the vendor's Ed25519 key signs: a context line, then the document as
    canonical JSON (sorted keys, no spaces)."""
    return BUILD_SIGNATURE_CONTEXT + json.dumps(
        document, sort_keys=True, separators=(",", ":")
    ).encode()


def verify_build(
    vendor_key: bytes, document: Any, signature: bytes, installed_version: int
) -> tuple[ClientBuild, int]:
    """The build and its version, if ``signature`` is the vendor's (``vendor_key``: the
    raw Ed25519 public key the device pinned) over ``document`` and the version is newer
    than ``installed_version``; BuildError (one line: why) otherwise."""
    if not isinstance(document, dict) or set(document) != {
        "name", "escrow_public_key", "global_key", "version"
    }:
        raise BuildError("not a build document (name, escrow_public_key, global_key, version)")
    version = document["version"]
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise BuildError("the build's version must be a positive integer")
    if not signature:
        raise BuildError("unsigned build")
    try:
        Ed25519PublicKey.from_public_bytes(vendor_key).verify(signature, build_message(document))
    except (InvalidSignature, ValueError):
        raise BuildError("the build is not signed by the vendor key this device trusts") from None
    if version <= installed_version:
        raise BuildError(
            f"version {version} is not newer than the installed version {installed_version}"
        )
    try:
        build = ClientBuild.from_json(document)
    except (B64Error, ValueError) as exc:
        raise BuildError(f"malformed build: {exc}") from None
    return build, version


def _b64(data: bytes | None) -> str | None:
    return None if data is None else b64encode(data)


def _key(text: Any, name: str) -> bytes | None:
    if text is None:
        return None
    return b64decode(text, f"client build field {name!r}", length=KEY_BYTES)


__all__ = [
    "BACKDOORS",
    "BUILD_SIGNATURE_CONTEXT",
    "ESCROW_FIELD",
    "GLOBAL_FIELD",
    "BuildError",
    "ClientBuild",
    "binding",
    "binding_of",
    "build_document",
    "build_message",
    "mandated_field",
    "verify_build",
]
