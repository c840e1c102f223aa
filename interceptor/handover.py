"""HI-2 / HI-3 handover: records sealed to the agency's pinned key (HPKE, RFC 9180).

A record is a JSON object with TS 102 232-flavoured fields: ``liid``, ``category``
(``IRI`` = metadata, ``CC`` = content), ``sequence``, ``source`` (who produced it: the
relay for IRI and ciphertext CC, an enterprise archive for readable CC), the message's
``id``, ``from``, ``to``, ``ts``, ``size``, and for CC either ``plaintext`` (from a party
that held a key) or ``envelope`` (the end-to-end ciphertext, base64). Only the agency's
private key opens it; the ledger logs the SHA-256 of the sealed bytes.
"""

from __future__ import annotations

import json
from typing import Any

from cryptography.hazmat.primitives import hpke
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

_SUITE = hpke.Suite(hpke.KEM.X25519, hpke.KDF.HKDF_SHA256, hpke.AEAD.CHACHA20_POLY1305)
_INFO = b"doormat handover v1"


def seal_record(agency_public_key: bytes, record: dict[str, Any]) -> bytes:
    body = json.dumps(record, sort_keys=True, separators=(",", ":")).encode()
    return _SUITE.encrypt(body, X25519PublicKey.from_public_bytes(agency_public_key), info=_INFO)


def open_record(agency_private_key: X25519PrivateKey, sealed: bytes) -> dict[str, Any]:
    """Raises cryptography's InvalidTag if the record was not sealed to this key."""
    obj = json.loads(_SUITE.decrypt(sealed, agency_private_key, info=_INFO))
    if not isinstance(obj, dict):
        raise ValueError("handover record is not a JSON object")
    return obj
