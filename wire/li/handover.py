"""HI-2 / HI-3 handover: the record format, and the label its sealing is bound to.

A record is a JSON object with TS 102 232-flavoured fields: ``liid``, ``category``
(``IRI`` = metadata, ``CC`` = content), ``sequence`` (per LIID and category, from 1),
``source`` (who produced it: ``relay`` for IRI and ciphertext CC, ``archive:<enterprise>``
for readable CC), the message's ``id``, ``from``, ``to``, ``ts``, ``size``, and for CC
exactly one of ``plaintext`` (from a party that held a key) or ``envelope`` (the
end-to-end ciphertext the relay had, base64)::

    {"category": "CC", "from": "alice@acme.phone", "id": "...", "liid": "XX-3F2A...",
     "plaintext": "meet at noon", "sequence": 1, "source": "archive:acme",
     "to": "bob@globex", "ts": 1764400000000}

Its bytes are compact JSON with sorted keys (``encode_record``). They travel sealed to the
agency's pinned X25519 key with the E2EE library's one HPKE suite, bound to
``HANDOVER_INFO``::

    sealed = clients.crypto.seal_to(agency_public_key, encode_record(record),
                                    info=HANDOVER_INFO)
    record = decode_record(clients.crypto.open_sealed(agency_private_key, sealed,
                                                      info=HANDOVER_INFO))

The sealing is not here: this package holds no key operation (the relay imports
``wire``). Only the agency's private key opens a record; the ledger logs the SHA-256 of
the sealed bytes.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from wire import strictjson
from wire.li.errors import HandoverError

#: The HPKE ``info`` every handover record is sealed with: a record cannot be opened as
#: anything else (an archive journal record, an escrow leaf), nor they as a record.
HANDOVER_INFO = b"doormat handover v1"
CATEGORIES = ("IRI", "CC")
#: Bound on one record's bytes (a CC record carries one envelope, in base64).
MAX_RECORD_BYTES = 256 * 1024


def handover_record(
    *, liid: str, category: str, sequence: int, source: str, **fields: Any
) -> dict[str, Any]:
    """A record: the four handover fields and the message's own (``id``, ``from``, ``to``,
    ``ts``, ``size``; for CC ``plaintext`` or ``envelope``). HandoverError if it would
    not be a valid record."""
    record = {**fields, "liid": liid, "category": category, "sequence": sequence,
              "source": source}
    check_record(record)
    return record


def check_record(record: Mapping[str, Any]) -> None:
    """HandoverError unless ``record`` has the handover fields, of the right types, and
    content exactly where its category says."""
    liid, category, sequence, source = (
        record.get(k) for k in ("liid", "category", "sequence", "source")
    )
    if not isinstance(liid, str) or not liid:
        raise HandoverError("handover record: 'liid' must be a non-empty string")
    if category not in CATEGORIES:
        raise HandoverError(f"handover record: 'category' must be one of {', '.join(CATEGORIES)}")
    if not isinstance(sequence, int) or isinstance(sequence, bool) or sequence < 1:
        raise HandoverError("handover record: 'sequence' must be an integer from 1")
    if not isinstance(source, str) or not source:
        raise HandoverError("handover record: 'source' must be a non-empty string")
    content = [k for k in ("plaintext", "envelope") if k in record]
    if category == "IRI" and content:
        raise HandoverError(f"handover record: an IRI record carries no {content[0]!r}")
    if category == "CC" and len(content) != 1:
        raise HandoverError("handover record: a CC record carries 'plaintext' or 'envelope'")


def encode_record(record: Mapping[str, Any]) -> bytes:
    """The bytes that are sealed: compact JSON, sorted keys."""
    check_record(record)
    return json.dumps(record, sort_keys=True, separators=(",", ":")).encode()


def decode_record(data: bytes) -> dict[str, Any]:
    """Read opened bytes back into a record, or raise HandoverError."""
    if len(data) > MAX_RECORD_BYTES:
        raise HandoverError(f"handover record is over {MAX_RECORD_BYTES} bytes")
    try:
        # Strict (wire/strictjson.py): no NaN/Infinity, no huge integer, bounded nesting.
        obj = strictjson.loads(data, "handover record", max_bytes=MAX_RECORD_BYTES)
    except strictjson.StrictJSONError as exc:
        raise HandoverError(str(exc)) from None
    if not isinstance(obj, dict):
        raise HandoverError("handover record is not a JSON object")
    check_record(obj)
    return obj


__all__ = [
    "CATEGORIES",
    "HANDOVER_INFO",
    "MAX_RECORD_BYTES",
    "check_record",
    "decode_record",
    "encode_record",
    "handover_record",
]
