"""The sealed envelope: what a device hands the relay, and the relay hands a device.

One envelope carries one user message to one recipient device. A message fanned out to
several devices travels as several envelopes with the same ``id``; the relay keys its
store and de-duplication on ``(from, id, to)``.

On the wire it is a JSON object, readable with ``mosquitto_sub``:

    {"v": 1, "id": "<32 hex>", "from": "alice@acme.phone", "to": "bob@globex.phone",
     "ts": 1764400000000, "header": "<base64>", "body": "<base64>",
     "prekey": "<base64>"?, "ext": {...}?}

``header``, ``body`` and ``prekey`` are opaque to everyone but the two devices: the
ratchet header, the padded AEAD ciphertext, and (on a session's first messages) the
X3DH initial message. ``ext`` carries fields that a client build adds (for instance a
mandated escrow field); the relay routes it untouched.

``parse`` is the only way outside bytes become an ``Envelope``; it refuses anything
that is not exactly this shape, with a message that says what is wrong.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from wire import strictjson
from wire.b64 import B64Error, b64decode, b64encode
from wire.ids import is_device

VERSION = 1
# The relay refuses larger envelopes. Padded ciphertexts of the largest bucket
# (see clients.crypto.padding) fit with room for the header and base64 overhead.
MAX_ENVELOPE_BYTES = 64 * 1024
MAX_EXT_BYTES = 4 * 1024

_ID_RE = re.compile(r"^[0-9a-f]{32}$")
_REQUIRED = {"v", "id", "from", "to", "ts", "header", "body"}
_OPTIONAL = {"prekey", "ext"}


class EnvelopeError(ValueError):
    """Bytes that are not a valid envelope. The message says which rule they broke."""


@dataclass(frozen=True)
class Envelope:
    id: str
    sender: str
    recipient: str
    ts: int  # milliseconds since the epoch, set by the sender
    header: bytes
    body: bytes
    prekey: bytes | None = None
    ext: dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> tuple[str, str, str]:
        """What the relay de-duplicates on."""
        return (self.sender, self.id, self.recipient)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "v": VERSION,
            "id": self.id,
            "from": self.sender,
            "to": self.recipient,
            "ts": self.ts,
            "header": b64encode(self.header),
            "body": b64encode(self.body),
        }
        if self.prekey is not None:
            out["prekey"] = b64encode(self.prekey)
        if self.ext:
            out["ext"] = self.ext
        return out

    def encode(self) -> bytes:
        return json.dumps(self.to_json(), separators=(",", ":"), sort_keys=True).encode()


def _unb64(name: str, value: Any) -> bytes:
    try:
        return b64decode(value, f"field {name!r}")
    except B64Error as exc:
        raise EnvelopeError(str(exc)) from None


def parse(data: bytes, *, max_bytes: int = MAX_ENVELOPE_BYTES) -> Envelope:
    """Parse and validate outside bytes. Raises EnvelopeError saying what is wrong."""
    if len(data) > max_bytes:
        raise EnvelopeError(f"envelope is {len(data)} bytes, over the {max_bytes}-byte limit")
    try:
        # Strict (wire/strictjson.py): no NaN/Infinity, no integer of thousands of
        # digits (a bare ValueError from json.loads), bounded nesting, no repeated key.
        obj = strictjson.loads_object(data, "envelope", max_bytes=max_bytes)
    except strictjson.StrictJSONError as exc:
        raise EnvelopeError(str(exc)) from None
    missing = _REQUIRED - obj.keys()
    if missing:
        raise EnvelopeError(f"envelope lacks field(s): {', '.join(sorted(missing))}")
    unknown = obj.keys() - _REQUIRED - _OPTIONAL
    if unknown:
        raise EnvelopeError(f"envelope has unknown field(s): {', '.join(sorted(unknown))}")
    if obj["v"] != VERSION or isinstance(obj["v"], bool):
        raise EnvelopeError(f"unsupported envelope version {obj['v']!r} (expected {VERSION})")
    if not isinstance(obj["id"], str) or not _ID_RE.match(obj["id"]):
        raise EnvelopeError("field 'id' must be 32 lower-case hex digits")
    for name in ("from", "to"):
        if not is_device(obj[name]):
            raise EnvelopeError(f"field {name!r} is not a device id: {obj[name]!r}")
    ts = obj["ts"]
    if not isinstance(ts, int) or isinstance(ts, bool) or not 0 <= ts < 2**53:
        raise EnvelopeError("field 'ts' must be a non-negative integer (milliseconds)")
    header = _unb64("header", obj["header"])
    body = _unb64("body", obj["body"])
    if not body:
        raise EnvelopeError("field 'body' is empty")
    prekey = _unb64("prekey", obj["prekey"]) if "prekey" in obj else None
    ext = obj.get("ext", {})
    if not isinstance(ext, dict):
        raise EnvelopeError("field 'ext' must be an object")
    if len(json.dumps(ext)) > MAX_EXT_BYTES:
        raise EnvelopeError(f"field 'ext' is over {MAX_EXT_BYTES} bytes")
    return Envelope(
        id=obj["id"],
        sender=obj["from"],
        recipient=obj["to"],
        ts=ts,
        header=header,
        body=body,
        prekey=prekey,
        ext=ext,
    )
