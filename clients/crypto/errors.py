"""Every way the crypto core can refuse something, one exception class each.

All of them subclass :class:`CryptoError`, so a caller that only wants to drop a bad
message can catch that one class. Each is raised *before* any state is changed: a
device that catches one holds exactly the keys and sessions it held before the call
(the ratchet computes on local variables and commits only after the AEAD tag and the
padding have checked out).
"""

from __future__ import annotations


class CryptoError(Exception):
    """Base class of every error raised by ``clients.crypto``."""


class BadSignature(CryptoError):
    """A signed prekey's Ed25519 signature does not verify under the bundle's identity."""


class MalformedInput(CryptoError):
    """Bytes or JSON from outside (a bundle, a header, a prekey message, a public key)
    that do not have the expected shape, so nothing was even attempted with them."""


class UnknownPrekey(CryptoError):
    """A prekey message names a signed or one-time prekey this device never issued."""


class ReusedPrekey(CryptoError):
    """A prekey message names a one-time prekey that was already used (and deleted).

    One-time prekeys exist to give the first flight forward secrecy and replay
    protection; accepting one twice would give up both.
    """


class DecryptError(CryptoError):
    """The AEAD refused the message: wrong key, or the header, body or associated data
    was altered in transit."""


class PaddingError(DecryptError):
    """The AEAD accepted the message but its plaintext is not correctly padded (only a
    buggy or malicious sender holding the key can produce this)."""


class ReplayError(CryptoError):
    """The message's key was already used (and deleted), or its chain is closed: a replay,
    or a delayed message whose stored skipped key was evicted."""


class TooManySkipped(CryptoError):
    """Accepting the message would mean deriving and storing more than MAX_SKIP skipped
    message keys in one chain."""


class UnknownSession(CryptoError):
    """No session with that peer device (and the message carries no prekey message that
    could start one)."""


class PlaintextTooLong(CryptoError):
    """The plaintext does not fit the largest padding bucket."""


class StateError(CryptoError):
    """Serialised state that cannot be loaded: not JSON, a missing field, a wrong type or
    key length."""


class StateVersionError(StateError):
    """Serialised state of a version this code does not know."""


__all__ = [
    "BadSignature",
    "CryptoError",
    "DecryptError",
    "MalformedInput",
    "PaddingError",
    "PlaintextTooLong",
    "ReplayError",
    "ReusedPrekey",
    "StateError",
    "StateVersionError",
    "TooManySkipped",
    "UnknownPrekey",
    "UnknownSession",
]
