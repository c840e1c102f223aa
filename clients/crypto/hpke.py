"""The one public-key encryption suite of doormat, and its two recipes.

HPKE (RFC 9180) in base mode, one suite: DHKEM(X25519, HKDF-SHA256), HKDF-SHA256,
ChaCha20-Poly1305. Everything that seals bytes to someone's X25519 public key uses it:
the HI-2/HI-3 handover to the agency (``wire.li.handover`` names its ``info``), a
device's journal records to its enterprise's archive (``clients.archive``), and the
escrow back door's wrapped message keys (``clients.crypto.mandated``).

``info`` binds the sealed bytes to their purpose: a ciphertext sealed with one label does
not open under another, so a handover record cannot be passed off as an archive record.
Each caller names its own label; the suite is not a parameter.
"""

from __future__ import annotations

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hpke
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from .errors import DecryptError, MalformedInput

SUITE = hpke.Suite(hpke.KEM.X25519, hpke.KDF.HKDF_SHA256, hpke.AEAD.CHACHA20_POLY1305)
PUBLIC_KEY_BYTES = 32


def seal_to(public_key: bytes, plaintext: bytes, *, info: bytes) -> bytes:
    """Seal ``plaintext`` to a raw 32-byte X25519 public key: ``enc || ciphertext``.

    MalformedInput if ``public_key`` is not an X25519 public key."""
    try:
        recipient = X25519PublicKey.from_public_bytes(public_key)
    except (TypeError, ValueError):
        raise MalformedInput(
            f"not a {PUBLIC_KEY_BYTES}-byte X25519 public key to seal to"
        ) from None
    return SUITE.encrypt(plaintext, recipient, info=info)


def open_sealed(private_key: X25519PrivateKey, sealed: bytes, *, info: bytes) -> bytes:
    """Open what ``seal_to`` sealed to this key's public half with the same ``info``.

    DecryptError when it does not open: another key, another label, altered bytes."""
    try:
        return SUITE.decrypt(sealed, private_key, info=info)
    except (InvalidTag, ValueError):
        raise DecryptError(
            "sealed bytes do not open: another key or label, or they were altered"
        ) from None
