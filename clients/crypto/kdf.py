"""The key derivation functions of X3DH and the Double Ratchet, all over SHA-256.

* ``x3dh_secret``: X3DH's KDF (X3DH spec §2.2): HKDF with a zero salt over
  ``32 x 0xFF || DH1 || DH2 || DH3 [|| DH4]``. The 0xFF prefix is the spec's: it keeps
  the IKM from ever colliding with an XEdDSA/Ed25519 signature input.
* ``kdf_rk``: the root-key KDF (Double Ratchet §5.2): HKDF with the root key as salt and
  the DH output as IKM -> (new root key, new chain key).
* ``kdf_ck``: the chain-key KDF (Double Ratchet §5.2): HMAC(ck, 0x01) is the message key,
  HMAC(ck, 0x02) the next chain key.
* ``expand_message_key``: a message key expanded with HKDF into the keys the cipher needs.
  The info string is a parameter so the same function reproduces libsignal's
  ``"WhisperMessageKeys"`` derivation in the known-answer test while the project uses
  its own string.

Each info string names this project and a version, so keys derived here can never be
confused with keys derived for another purpose (or by another protocol) from the same
secret.
"""

from __future__ import annotations

import hmac

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

X3DH_INFO = b"doormat X3DH v1"
RATCHET_INFO = b"doormat ratchet v1"
MESSAGE_KEYS_INFO = b"doormat message keys v1"

# KDF_CK's two constants (Double Ratchet §5.2): distinct single bytes as HMAC input.
_MESSAGE_KEY_SEED = b"\x01"
_CHAIN_KEY_SEED = b"\x02"

# One hash-algorithm object, reused: creating it per call costs time on the hot path.
_SHA256 = hashes.SHA256()
_X3DH_PREFIX = b"\xff" * 32


def hkdf(ikm: bytes, *, salt: bytes | None, info: bytes, length: int) -> bytes:
    """HKDF-SHA256 (RFC 5869). ``salt=None`` means 32 zero bytes, as the RFC says."""
    return HKDF(algorithm=_SHA256, length=length, salt=salt, info=info).derive(ikm)


def x3dh_secret(dh_outputs: list[bytes]) -> bytes:
    """SK = HKDF(salt = 32 zero bytes, IKM = F || DH1 || DH2 || DH3 [|| DH4])."""
    return hkdf(_X3DH_PREFIX + b"".join(dh_outputs), salt=bytes(32), info=X3DH_INFO, length=32)


def kdf_rk(root_key: bytes, dh_output: bytes) -> tuple[bytes, bytes]:
    """KDF_RK(rk, dh_out) -> (next root key, chain key)."""
    out = hkdf(dh_output, salt=root_key, info=RATCHET_INFO, length=64)
    return out[:32], out[32:]


def kdf_ck(chain_key: bytes) -> tuple[bytes, bytes]:
    """KDF_CK(ck) -> (message key, next chain key)."""
    return (
        hmac.digest(chain_key, _MESSAGE_KEY_SEED, "sha256"),
        hmac.digest(chain_key, _CHAIN_KEY_SEED, "sha256"),
    )


def expand_message_key(message_key: bytes, info: bytes, length: int) -> bytes:
    """HKDF(salt = none, IKM = message key, info) -> ``length`` bytes of cipher keys.

    The project uses ``MESSAGE_KEYS_INFO`` and 44 bytes (an AES-256 key and a 96-bit
    nonce); libsignal uses ``"WhisperMessageKeys"`` and 80 bytes (cipher key, MAC key,
    IV), which the known-answer test reproduces.
    """
    return hkdf(message_key, salt=None, info=info, length=length)
