"""Witnessing a log's checkpoints, sans I/O: C2SP cosignatures and the add-checkpoint
exchange (https://c2sp.org/tlog-cosignature, https://c2sp.org/tlog-witness).

A *witness* keeps, per log, the latest checkpoint it cosigned, and cosigns a new one
only if the log proves (RFC 9162 consistency proof) that the new tree extends it. What
a log cannot then do unseen is go back: show a shorter log, or another history, to
anyone who holds the witness's cosignature. In doormat the witness is the court's
(oversight's), outside the interceptor (``interceptor.witness``); the interceptor's
audit ledger asks it to cosign each checkpoint before it acts (docs/ledger.md).

This module is the contract both sides share:

* **Cosignatures** (``cosignature/v1``, Ed25519): a note signature line
  ``— <witness name> base64(key ID || timestamp || signature)`` where the key ID is
  SHA-256(name || "\\n" || 0x04 || public key)[:4], the timestamp is 8 bytes big-endian
  (POSIX seconds), and the signature covers::

      cosignature/v1
      time <timestamp>
      <the checkpoint's note text>

  :class:`CosignatureVerifier` is a ``wire.note.Verifier``, so ``open_note`` checks a
  cosigned checkpoint with the log's key and the witness's key together. Its verifier
  key (vkey) has type byte 0x04: ``<name>+<hex id>+base64(0x04 || key)``.
* **add-checkpoint**: the request body is ``old <size>\\n``, the consistency proof from
  that size (one base64 hash per line, none when the old size is 0), an empty line,
  then the signed checkpoint. :class:`WitnessResponse` carries the spec's HTTP status
  (200 with cosignature lines, 409 with the witness's size, 400, 403, 404, 422) and a
  human-readable reason, so the exchange can travel over HTTP, a control message, or a
  direct call alike.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from wire.b64 import B64Error, b64decode, b64encode
from wire.note import (
    ED25519_PUBLIC_KEY_SIZE,
    ED25519_SIGNATURE_SIZE,
    KeyFormatError,
    NoteSignature,
    Verifier,
    is_valid_key_name,
)

#: The cosignature/v1 Ed25519 type byte (c2sp.org/tlog-cosignature).
ALG_COSIGNATURE_V1 = 0x04
COSIGNATURE_HEADER = "cosignature/v1\n"
#: The spec's bound on consistency proof lines in an add-checkpoint request.
MAX_PROOF_LINES = 63
#: An add-checkpoint request: a checkpoint note and at most 63 proof lines.
MAX_REQUEST_BYTES = 64 * 1024
MAX_TIMESTAMP = 2**63 - 1

_SIZE_RE = re.compile(r"0|[1-9][0-9]{0,19}")
_PRIVATE_PREFIX = "PRIVATE+KEY+"

# The spec's status codes.
OK = 200
BAD_REQUEST = 400
FORBIDDEN = 403
NOT_FOUND = 404
CONFLICT = 409
UNPROCESSABLE = 422


class WitnessFormatError(ValueError):
    """An add-checkpoint request or response that is not in the protocol's format."""


def cosigner_key_id(name: str, public_key: bytes) -> int:
    """SHA-256(name || "\\n" || 0x04 || public key)[:4], big-endian."""
    if len(public_key) != ED25519_PUBLIC_KEY_SIZE:
        raise KeyFormatError(f"an Ed25519 public key is {ED25519_PUBLIC_KEY_SIZE} bytes")
    digest = hashlib.sha256(
        name.encode("utf-8") + b"\n" + bytes([ALG_COSIGNATURE_V1]) + public_key
    ).digest()
    return int.from_bytes(digest[:4], "big")


def cosigned_message(note_text: str, timestamp: int) -> bytes:
    """What a cosignature/v1 signature covers."""
    return f"{COSIGNATURE_HEADER}time {timestamp}\n{note_text}".encode()


@dataclass(frozen=True)
class CosignatureVerifier(Verifier):
    """A witness's public key: verifies its cosignature/v1 lines on a checkpoint.

    A ``wire.note.Verifier`` whose key ID uses type 0x04 and whose ``verify`` takes the
    signature line's bytes after the key ID (timestamp || Ed25519 signature), so it plugs
    into ``open_note`` beside the log's own key."""

    @property
    def key_id(self) -> int:
        return cosigner_key_id(self.name, self.public_key)

    @classmethod
    def from_vkey(cls, vkey: str) -> CosignatureVerifier:
        """Parse ``<name>+<8 hex key ID>+<base64(0x04 || public key)>``."""
        parts = vkey.split("+", 2)
        if len(parts) != 3:
            raise KeyFormatError("a verifier key has the form <name>+<hex key id>+<base64 key>")
        name, hex_id, b64 = parts
        if not is_valid_key_name(name):
            raise KeyFormatError(f"invalid key name {name!r}")
        if len(hex_id) != 8 or any(c not in "0123456789abcdefABCDEF" for c in hex_id):
            raise KeyFormatError(f"verifier key id {hex_id!r} is not 8 hex digits")
        try:
            raw = b64decode(b64, "verifier key material")
        except B64Error as exc:
            raise KeyFormatError(str(exc)) from None
        if not raw or raw[0] != ALG_COSIGNATURE_V1:
            raise KeyFormatError("not a cosignature/v1 key (type byte 0x04)")
        if len(raw) != 1 + ED25519_PUBLIC_KEY_SIZE:
            raise KeyFormatError(f"an Ed25519 public key is {ED25519_PUBLIC_KEY_SIZE} bytes")
        verifier = cls(name, raw[1:])
        if verifier.key_id != int(hex_id, 16):
            raise KeyFormatError(
                f"verifier key id {hex_id} does not match its name and key "
                f"(expected {verifier.key_id:08x})"
            )
        return verifier

    def vkey(self) -> str:
        key = b64encode(bytes([ALG_COSIGNATURE_V1]) + self.public_key)
        return f"{self.name}+{self.key_id:08x}+{key}"

    def verify(self, message: bytes, signature: bytes) -> bool:
        if len(signature) != 8 + ED25519_SIGNATURE_SIZE:
            return False
        timestamp = int.from_bytes(signature[:8], "big")
        if timestamp > MAX_TIMESTAMP:
            return False
        try:
            text = message.decode("utf-8")
        except UnicodeDecodeError:
            return False
        return Verifier.verify(self, cosigned_message(text, timestamp), signature[8:])


def cosignature_time(signature: NoteSignature) -> int:
    """The timestamp inside a cosignature line's signature bytes (not verified here)."""
    if len(signature.signature) != 8 + ED25519_SIGNATURE_SIZE:
        raise WitnessFormatError("not a cosignature/v1 signature (wrong length)")
    return int.from_bytes(signature.signature[:8], "big")


def is_cosignature_vkey(vkey: str) -> bool:
    """Whether a verifier key in text form is a cosignature/v1 (type 0x04) key."""
    parts = vkey.strip().split("+", 2)
    if len(parts) != 3:
        return False
    try:
        raw = b64decode(parts[2], "verifier key material")
    except B64Error:
        return False
    return bool(raw) and raw[0] == ALG_COSIGNATURE_V1


class Cosigner:
    """A witness's Ed25519 key: cosigns checkpoints (cosignature/v1)."""

    __slots__ = ("_key", "_name", "_public")

    def __init__(self, name: str, private_key: Ed25519PrivateKey) -> None:
        if not is_valid_key_name(name):
            raise KeyFormatError(f"invalid key name {name!r}")
        self._name = name
        self._key = private_key
        self._public = private_key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )

    @classmethod
    def generate(cls, name: str) -> Cosigner:
        return cls(name, Ed25519PrivateKey.generate())

    @classmethod
    def from_skey(cls, skey: str) -> Cosigner:
        """Parse ``PRIVATE+KEY+<name>+<8 hex key ID>+<base64(0x04 || seed)>``."""
        if not skey.startswith(_PRIVATE_PREFIX):
            raise KeyFormatError("a signer key starts with PRIVATE+KEY+")
        parts = skey[len(_PRIVATE_PREFIX) :].split("+", 2)
        if len(parts) != 3:
            raise KeyFormatError("a signer key has the form PRIVATE+KEY+<name>+<id>+<key>")
        name, hex_id, b64 = parts
        try:
            raw = b64decode(b64, "signer key material")
        except B64Error as exc:
            raise KeyFormatError(str(exc)) from None
        if len(raw) != 33 or raw[0] != ALG_COSIGNATURE_V1:
            raise KeyFormatError("not a cosignature/v1 signer key (0x04 and a 32-byte seed)")
        cosigner = cls(name, Ed25519PrivateKey.from_private_bytes(raw[1:]))
        if len(hex_id) != 8 or cosigner.key_id != int(hex_id, 16):
            raise KeyFormatError("signer key id does not match its name and key")
        return cosigner

    @property
    def name(self) -> str:
        return self._name

    @property
    def key_id(self) -> int:
        return cosigner_key_id(self._name, self._public)

    def verifier(self) -> CosignatureVerifier:
        return CosignatureVerifier(self._name, self._public)

    def skey(self) -> str:
        seed = self._key.private_bytes(
            serialization.Encoding.Raw,
            serialization.PrivateFormat.Raw,
            serialization.NoEncryption(),
        )
        b64 = b64encode(bytes([ALG_COSIGNATURE_V1]) + seed)
        return f"{_PRIVATE_PREFIX}{self._name}+{self.key_id:08x}+{b64}"

    def cosign(self, note_text: str, timestamp: int) -> str:
        """The cosignature line (ending in a newline) over a checkpoint's note text."""
        if isinstance(timestamp, bool) or not 0 <= timestamp <= MAX_TIMESTAMP:
            raise ValueError("a cosignature timestamp is 0..2^63-1 seconds")
        signature = self._key.sign(cosigned_message(note_text, timestamp))
        blob = timestamp.to_bytes(8, "big") + signature
        return NoteSignature(self._name, self.key_id, blob).line()

    def __repr__(self) -> str:  # never print key material
        return f"Cosigner({self._name!r}, key_id={self.key_id:08x})"


# ------------------------------------------------------------------ the add-checkpoint call


@dataclass(frozen=True)
class AddCheckpoint:
    """An add-checkpoint request: the size the client believes the witness holds, the
    consistency proof from it, and the signed checkpoint (note text with signatures)."""

    old_size: int
    proof: tuple[bytes, ...]
    checkpoint: bytes

    def encode(self) -> bytes:
        lines = [f"old {self.old_size}\n"] + [b64encode(h) + "\n" for h in self.proof]
        return ("".join(lines) + "\n").encode() + self.checkpoint

    @classmethod
    def parse(cls, body: bytes) -> AddCheckpoint:
        if not isinstance(body, bytes):
            raise WitnessFormatError("an add-checkpoint request is bytes")
        if len(body) > MAX_REQUEST_BYTES:
            raise WitnessFormatError(f"request is larger than {MAX_REQUEST_BYTES} bytes")
        head, sep, checkpoint = body.partition(b"\n\n")
        if not sep:
            raise WitnessFormatError("request has no empty line before the checkpoint")
        try:
            lines = head.decode("ascii").split("\n")
        except UnicodeDecodeError:
            raise WitnessFormatError("request header is not ASCII") from None
        first = lines[0]
        if not first.startswith("old ") or not _SIZE_RE.fullmatch(first[4:]):
            raise WitnessFormatError("the first line must be 'old <size>', no leading zeros")
        old = int(first[4:])
        if old > 2**64 - 1:
            raise WitnessFormatError("old size is larger than 2^64-1")
        proof_lines = lines[1:]
        if len(proof_lines) > MAX_PROOF_LINES:
            raise WitnessFormatError(f"more than {MAX_PROOF_LINES} consistency proof lines")
        proof = []
        for i, line in enumerate(proof_lines):
            try:
                proof.append(b64decode(line, f"proof line {i + 1}", length=32))
            except B64Error as exc:
                raise WitnessFormatError(str(exc)) from None
        return cls(old, tuple(proof), checkpoint)


@dataclass(frozen=True)
class WitnessResponse:
    """The witness's answer: an HTTP-style ``status``, the protocol ``body`` (200:
    cosignature lines; 409: the witness's size and a newline) and a ``reason`` for
    people (not part of the protocol's body)."""

    status: int
    body: bytes
    reason: str

    @property
    def ok(self) -> bool:
        return self.status == OK

    def conflict_size(self) -> int:
        """The witness's size, from a 409 answer."""
        text = self.body.decode("ascii", "replace")
        if self.status != CONFLICT or not text.endswith("\n") or not _SIZE_RE.fullmatch(text[:-1]):
            raise WitnessFormatError(f"not a 409 answer with a size: {text[:40]!r}")
        return int(text[:-1])


def cosigned(checkpoint: bytes | str, cosignature_lines: bytes | str) -> str:
    """The checkpoint with the witness's cosignature lines added (the spec's way for a
    client to read a 200 answer: append, then verify as one note)."""
    note = checkpoint.decode() if isinstance(checkpoint, bytes) else checkpoint
    lines = (
        cosignature_lines.decode() if isinstance(cosignature_lines, bytes) else cosignature_lines
    )
    return note + lines


__all__ = [
    "ALG_COSIGNATURE_V1",
    "AddCheckpoint",
    "CosignatureVerifier",
    "Cosigner",
    "WitnessFormatError",
    "WitnessResponse",
    "cosignature_time",
    "cosigned",
    "cosigned_message",
    "cosigner_key_id",
    "is_cosignature_vkey",
]
