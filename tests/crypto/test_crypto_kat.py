"""Known answers: libsignal's chain step, RFC 5869 HKDF, and our KDF layouts."""

from __future__ import annotations

import hmac

from clients.crypto import kdf
from clients.crypto.kdf import expand_message_key, hkdf, kdf_ck, kdf_rk

# libsignal (rust/protocol/src/ratchet/keys.rs, chain key test): message keys are
# HKDF-SHA256(IKM = HMAC(ck, 0x01), salt = none, info = "WhisperMessageKeys", 80 bytes)
# = cipher key (32) | MAC key (32) | IV (16); the next chain key is HMAC(ck, 0x02).
CHAIN_KEY = bytes.fromhex("8ab72d6f4cc5ac0d387eaf463378ddb28edd07385b1cb01250c715982e7ad48f")
CIPHER_KEY = bytes.fromhex("bf51e9d75e0e31031051f82a2491ffc084fa298b7793bd9db620056febf45217")
MAC_KEY = bytes.fromhex("c6c77d6a73a354337a56435e34607dfe48e3ace14e77314dc6abc172e7a7030b")
NEXT_CHAIN_KEY = bytes.fromhex("28e8f8fee54b801eef7c5cfb2f17f32c7b334485bbb70fac6ec10342a246d15d")


def test_libsignal_chain_step_known_answer() -> None:
    message_key, next_chain_key = kdf_ck(CHAIN_KEY)
    material = expand_message_key(message_key, b"WhisperMessageKeys", 80)
    assert material[:32] == CIPHER_KEY
    assert material[32:64] == MAC_KEY
    assert len(material[64:]) == 16  # the IV (not part of the published vector we check)
    assert next_chain_key == NEXT_CHAIN_KEY


def test_the_info_string_matters() -> None:
    """Our own derivation uses our own info string, so it differs from libsignal's."""
    message_key, _ = kdf_ck(CHAIN_KEY)
    ours = expand_message_key(message_key, kdf.MESSAGE_KEYS_INFO, 80)
    assert ours[:32] != CIPHER_KEY


def test_hkdf_rfc5869_case_1() -> None:
    okm = hkdf(
        bytes.fromhex("0b" * 22),
        salt=bytes.fromhex("000102030405060708090a0b0c"),
        info=bytes.fromhex("f0f1f2f3f4f5f6f7f8f9"),
        length=42,
    )
    assert okm == bytes.fromhex(
        "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865"
    )


def test_hkdf_rfc5869_case_3_no_salt_is_zero_salt() -> None:
    ikm = bytes.fromhex("0b" * 22)
    okm = hkdf(ikm, salt=None, info=b"", length=42)
    assert okm == bytes.fromhex(
        "8da4e775a563c18f715f802a063c5a31b8a11f5c5ee1879ec3454e5f3c738d2d9d201395faa4b61a96c8"
    )
    assert okm == hkdf(ikm, salt=bytes(32), info=b"", length=42)


def test_kdf_ck_is_hmac_01_and_02() -> None:
    ck = bytes(range(32))
    assert kdf_ck(ck) == (
        hmac.digest(ck, b"\x01", "sha256"),
        hmac.digest(ck, b"\x02", "sha256"),
    )


def test_kdf_rk_is_hkdf_salted_with_the_root_key() -> None:
    rk, dh_out = bytes(range(32)), bytes(range(32, 64))
    out = hkdf(dh_out, salt=rk, info=b"doormat ratchet v1", length=64)
    assert kdf_rk(rk, dh_out) == (out[:32], out[32:])
