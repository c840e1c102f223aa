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

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from clients.crypto import open_sealed, seal_to

_INFO = b"doormat handover v1"


def seal_record(agency_public_key: bytes, record: dict[str, Any]) -> bytes:
    body = json.dumps(record, sort_keys=True, separators=(",", ":")).encode()
    return seal_to(agency_public_key, body, info=_INFO)


def open_record(agency_private_key: X25519PrivateKey, sealed: bytes) -> dict[str, Any]:
    """Raises clients.crypto's DecryptError if the record was not sealed to this key."""
    obj = json.loads(open_sealed(agency_private_key, sealed, info=_INFO))
    if not isinstance(obj, dict):
        raise ValueError("handover record is not a JSON object")
    return obj
