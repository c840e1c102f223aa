"""Safety numbers: 60 digits two people compare to check they hold each other's keys.

Modelled on Signal's NumericFingerprintGenerator (version 0 scheme): for each party,
``h = SHA-512(version || key || id)`` then 5200 times ``h = SHA-512(h || key)``; the
first 30 bytes, as six 5-byte big-endian numbers mod 100000, give 30 digits. The two
halves are put in sorted order so both sides compute the same 60 digits. The key is the
whole encoded identity (Ed25519 and X25519 halves), so replacing either half of either
party's identity changes the number. The iterations make it costly to grind for a key
whose number collides with a given one.

Signal also hashes a stable user identifier; our identities are per device and this
API is given only the two identities, so the identifier is the fixed project label.
"""

from __future__ import annotations

import hashlib

from .identity import PublicIdentity

ITERATIONS = 5200
_VERSION = b"\x00\x00"
_LABEL = b"doormat safety number v1"


def _half(identity: PublicIdentity) -> str:
    key = identity.encode()
    digest = hashlib.sha512(_VERSION + key + _LABEL).digest()
    for _ in range(ITERATIONS):
        digest = hashlib.sha512(digest + key).digest()
    return "".join(
        f"{int.from_bytes(digest[i : i + 5], 'big') % 100000:05d}" for i in range(0, 30, 5)
    )


def safety_number(a: PublicIdentity, b: PublicIdentity) -> str:
    """60 decimal digits; ``safety_number(a, b) == safety_number(b, a)``."""
    x, y = _half(a), _half(b)
    return x + y if x <= y else y + x


def format_safety_number(number: str) -> str:
    """Twelve groups of five digits, as apps display them."""
    return " ".join(number[i : i + 5] for i in range(0, len(number), 5))
