"""The end-to-end encryption core of doormat: X3DH, the Double Ratchet, padding, safety
numbers, and per-device sessions (Sesame-lite). Sans-I/O: bytes and objects in, bytes
and objects out; no network, no files, no asyncio. See docs/crypto.md.

    alice = DeviceCrypto.create("alice@acme.phone")
    bob = DeviceCrypto.create("bob@globex.phone")
    alice.start_session("bob@globex.phone", bundle_of_bob)   # from the directory
    sealed = alice.encrypt("bob@globex.phone", b"hi")        # -> envelope fields
    assert bob.decrypt("alice@acme.phone", sealed) == b"hi"
"""

from __future__ import annotations

from .aead import open_body
from .device import DeviceCrypto
from .errors import (
    BadSignature,
    CryptoError,
    DecryptError,
    MalformedInput,
    PaddingError,
    PlaintextTooLong,
    ReplayError,
    ReusedPrekey,
    StateError,
    StateVersionError,
    TooManySkipped,
    UnknownPrekey,
    UnknownSession,
)
from .identity import PublicIdentity
from .padding import BUCKETS, MAX_PLAINTEXT, pad, unpad
from .ratchet import MAX_SKIP, MAX_SKIPPED_KEYS
from .safety import format_safety_number, safety_number
from .sealed import Sealed

__all__ = [
    "BUCKETS",
    "MAX_PLAINTEXT",
    "MAX_SKIP",
    "MAX_SKIPPED_KEYS",
    "BadSignature",
    "CryptoError",
    "DecryptError",
    "DeviceCrypto",
    "MalformedInput",
    "PaddingError",
    "PlaintextTooLong",
    "PublicIdentity",
    "ReplayError",
    "ReusedPrekey",
    "Sealed",
    "StateError",
    "StateVersionError",
    "TooManySkipped",
    "UnknownPrekey",
    "UnknownSession",
    "format_safety_number",
    "open_body",
    "pad",
    "safety_number",
    "unpad",
]
