"""The cryptography of the mandated client builds (the back doors a blanket tap needs).

These recipes are what a government's mandate adds to every client, and what a key
holder does with a captured envelope. They are in the library, next to the ratchet they
weaken, so that the weakening is plain to read: each one hands a third party what the
end-to-end design keeps on the two devices.

* **escrow** (LEAF-style, after Clipper): each message key, with its session's
  associated data, is wrapped to the escrow public key with the library's one HPKE suite
  (``clients.crypto.hpke``). Whoever holds the escrow private key opens every message
  with ``open_body`` - the government, or whoever steals the key.
* **global key**: one symmetric key baked into every build; the padded plaintext is also
  sealed under it (ChaCha20-Poly1305). One device image (or the app binary) yields it.

``binding`` ties a wrapped key or a sealed copy to one envelope (``wire.li.builds.binding``:
its id, sender and recipient), so it cannot be moved to another envelope. The envelope
fields that carry these (``ext.escrow``, ``ext.global``) are the build's business
(``clients.backdoors``), not the library's.
"""

from __future__ import annotations

import secrets
import struct

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from .aead import open_body
from .errors import DecryptError, MalformedInput
from .hpke import open_sealed, seal_to
from .padding import pad, unpad
from .sealed import Sealed

ESCROW_INFO = b"doormat escrow LEAF v1"
GLOBAL_NONCE_BYTES = 12
GLOBAL_KEY_BYTES = 32
_KEY_LENGTH = struct.Struct(">H")


def _escrow_info(binding: bytes) -> bytes:
    return ESCROW_INFO + b"|" + binding


def new_escrow_key() -> X25519PrivateKey:
    """A fresh escrow key pair (the government keeps the private half)."""
    return X25519PrivateKey.generate()


def new_global_key() -> bytes:
    """A fresh global key (baked into every build)."""
    return ChaCha20Poly1305.generate_key()


def escrow_wrap(escrow_public_key: bytes, sealed: Sealed, *, binding: bytes) -> bytes:
    """Wrap the message key and associated data of a fresh encryption to the escrow key.

    ValueError if ``sealed`` carries no message key (it was rebuilt from an envelope)."""
    if sealed.message_key is None or sealed.associated_data is None:
        raise ValueError("escrow build needs the message key of a fresh encryption")
    leaf = _KEY_LENGTH.pack(len(sealed.message_key)) + sealed.message_key
    return seal_to(
        escrow_public_key, leaf + sealed.associated_data, info=_escrow_info(binding)
    )


def escrow_open(
    escrow_private_key: X25519PrivateKey,
    wrapped: bytes,
    header: bytes,
    body: bytes,
    *,
    binding: bytes,
) -> bytes:
    """What the escrow key holder does: unwrap the message key, open the body.

    A CryptoError (DecryptError, MalformedInput) when this key does not open it."""
    leaf = open_sealed(escrow_private_key, wrapped, info=_escrow_info(binding))
    if len(leaf) < _KEY_LENGTH.size:
        raise MalformedInput("escrow leaf is too short")
    (n,) = _KEY_LENGTH.unpack(leaf[: _KEY_LENGTH.size])
    start = _KEY_LENGTH.size
    message_key, associated_data = leaf[start : start + n], leaf[start + n :]
    return open_body(message_key, associated_data, header, body)


def global_seal(global_key: bytes, plaintext: bytes, *, binding: bytes) -> bytes:
    """The padded plaintext sealed under the global key: ``nonce || ciphertext``."""
    nonce = secrets.token_bytes(GLOBAL_NONCE_BYTES)
    return nonce + ChaCha20Poly1305(global_key).encrypt(nonce, pad(plaintext), binding)


def global_open(global_key: bytes, blob: bytes, *, binding: bytes) -> bytes:
    """What anyone holding the global key does with a captured copy.

    A CryptoError (DecryptError, PaddingError, MalformedInput) when it does not open."""
    if len(blob) <= GLOBAL_NONCE_BYTES:
        raise MalformedInput("global-key copy is too short")
    try:
        padded = ChaCha20Poly1305(global_key).decrypt(
            blob[:GLOBAL_NONCE_BYTES], blob[GLOBAL_NONCE_BYTES:], binding
        )
    except (InvalidTag, ValueError):
        raise DecryptError("the global key does not open this copy") from None
    return unpad(padded)
