"""The end-to-end encryption core of doormat, as a library: X3DH, the Double Ratchet,
padding, safety numbers, per-device sessions (Sesame-lite), the one HPKE suite, and the
recipes of the mandated back doors. Sans-I/O: bytes and objects in, bytes and objects
out; no network, no files, no asyncio. See docs/crypto.md.

This package's namespace is the library's **public layer**: every name a caller outside
``clients/crypto`` may use is imported here. The modules behind it (``aead``, ``kdf``,
``ratchet``, ``x3dh``, ``identity``, ``prekeys``, ``sessions``, ``state``, ``hpke``,
``mandated``, ...) are the **inner layer**: nothing outside the package imports them
(tests/architecture checks it), so the primitives can change without touching a caller.

    alice = DeviceCrypto.create("alice@acme.phone")
    bob = DeviceCrypto.create("bob@globex.phone")
    alice.start_session("bob@globex.phone", bundle_of_bob)   # from the directory
    sealed = alice.encrypt("bob@globex.phone", b"hi")        # -> envelope fields
    assert bob.decrypt("alice@acme.phone", sealed) == b"hi"

    thief = StolenState(bob.to_bytes())                      # what a stolen copy opens
    thief.open("alice@acme.phone", "bob@globex.phone", later_sealed)

    sealed = seal_to(agency_public_key, record, info=b"...")  # HPKE, RFC 9180
    assert open_sealed(agency_private_key, sealed, info=b"...") == record
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
from .hpke import open_sealed, seal_to
from .identity import PublicIdentity
from .mandated import (
    escrow_open,
    escrow_wrap,
    global_open,
    global_seal,
    new_escrow_key,
    new_global_key,
)
from .padding import BUCKETS, MAX_PLAINTEXT, pad, unpad
from .ratchet import MAX_SKIP, MAX_SKIPPED_KEYS
from .safety import format_safety_number, safety_number
from .sealed import Sealed
from .stolen import StolenState
from .x3dh import Bundle, PrekeyMessage

__all__ = [
    "BUCKETS",
    "MAX_PLAINTEXT",
    "MAX_SKIP",
    "MAX_SKIPPED_KEYS",
    "BadSignature",
    "Bundle",
    "CryptoError",
    "DecryptError",
    "DeviceCrypto",
    "MalformedInput",
    "PaddingError",
    "PlaintextTooLong",
    "PrekeyMessage",
    "PublicIdentity",
    "ReplayError",
    "ReusedPrekey",
    "Sealed",
    "StateError",
    "StateVersionError",
    "StolenState",
    "TooManySkipped",
    "UnknownPrekey",
    "UnknownSession",
    "escrow_open",
    "escrow_wrap",
    "format_safety_number",
    "global_open",
    "global_seal",
    "new_escrow_key",
    "new_global_key",
    "open_body",
    "open_sealed",
    "pad",
    "safety_number",
    "seal_to",
    "unpad",
]
