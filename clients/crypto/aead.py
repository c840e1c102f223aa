"""The per-message AEAD: AES-256-GCM keyed by one message key, used for one message.

ENCRYPT/DECRYPT of the Double Ratchet spec (§3.1, §5.2): the message key is expanded
with HKDF into an AES-256 key and a 96-bit nonce, and the associated data is the
session's AD (from X3DH) followed by the encoded ratchet header, so a changed header is
refused by the tag just like a changed body. A fixed-per-key nonce is safe because each
message key encrypts exactly one message and is then deleted.

``open_body`` needs nothing but the message key, the session AD and the envelope's
header and body: that is all an escrow holder (issue 4) would have, so it is public.
"""

from __future__ import annotations

import struct

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from .errors import DecryptError
from .kdf import MESSAGE_KEYS_INFO
from .padding import pad, unpad

KEY_BYTES = 32
NONCE_BYTES = 12
TAG_BYTES = 16
_MATERIAL_BYTES = KEY_BYTES + NONCE_BYTES
_AD_LENGTH = struct.Struct(">H")
_SHA256 = hashes.SHA256()


def ad_prefix(session_ad: bytes) -> bytes:
    """The part of the AEAD's associated data that is fixed for a session.

    CONCAT(AD, header) of the spec, with AD's length in front (as §3.1 advises) so the
    split between AD and header can never be moved. Sessions compute it once.
    """
    return _AD_LENGTH.pack(len(session_ad)) + session_ad


# The two functions below are the per-message hot path, so they call HKDF and AES-GCM
# directly rather than through kdf.expand_message_key (same computation, one call
# layer less); the known-answer test pins that computation down through kdf.


def seal(message_key: bytes, prefix: bytes, header: bytes, plaintext: bytes) -> bytes:
    """Pad and encrypt one plaintext. PlaintextTooLong before any key is derived."""
    padded = pad(plaintext)
    material = HKDF(_SHA256, _MATERIAL_BYTES, None, MESSAGE_KEYS_INFO).derive(message_key)
    return AESGCM(material[:KEY_BYTES]).encrypt(material[KEY_BYTES:], padded, prefix + header)


def unseal(message_key: bytes, prefix: bytes, header: bytes, body: bytes) -> bytes:
    """Inverse of ``seal``: DecryptError, or PaddingError (a DecryptError)."""
    material = HKDF(_SHA256, _MATERIAL_BYTES, None, MESSAGE_KEYS_INFO).derive(message_key)
    try:
        padded = AESGCM(material[:KEY_BYTES]).decrypt(material[KEY_BYTES:], body, prefix + header)
    except InvalidTag:
        raise DecryptError(
            "message authentication failed: wrong key, or the header or body was altered"
        ) from None
    return unpad(padded)


def seal_body(message_key: bytes, session_ad: bytes, header: bytes, plaintext: bytes) -> bytes:
    """Pad and encrypt one plaintext under a message key and a session's AD."""
    return seal(message_key, ad_prefix(session_ad), header, plaintext)


def open_body(message_key: bytes, associated_data: bytes, header: bytes, body: bytes) -> bytes:
    """Decrypt and unpad one body given its message key and the session AD.

    DecryptError if the tag does not verify (wrong key, or header/body/AD altered);
    PaddingError (a DecryptError) if it verifies but is not padded as ``pad`` does.
    """
    return unseal(message_key, ad_prefix(associated_data), header, body)
