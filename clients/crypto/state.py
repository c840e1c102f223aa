"""The versioned serialisation of a device's crypto state, and typed field readers.

State is a JSON object, UTF-8, with a top-level ``"version"``; binary values are
standard base64 strings. JSON keeps it inspectable in class (students can open a
device's state and find its keys) and trivially versioned. It holds private keys: it
is exactly as secret as the device itself, and the caller decides where it is stored
(this package does no I/O).

The readers below turn every malformed field into a StateError that names the field,
so a corrupt file gives a clear message instead of a KeyError deep inside a class.
"""

from __future__ import annotations

import json
from typing import Any

from wire.b64 import B64Error, b64decode

from .errors import StateError, StateVersionError

STATE_VERSION = 1
STATE_KIND = "doormat.crypto.device"

JSON = dict[str, Any]


def dump(body: JSON) -> bytes:
    """Wrap ``body`` with the version tag and encode it."""
    return json.dumps(
        {"version": STATE_VERSION, "kind": STATE_KIND, **body}, separators=(",", ":")
    ).encode()


def load(data: bytes) -> JSON:
    """Parse and check the version tag. StateVersionError / StateError on failure."""
    try:
        obj = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError, TypeError) as exc:
        raise StateError(f"crypto state is not JSON: {exc}") from None
    if not isinstance(obj, dict) or obj.get("kind") != STATE_KIND:
        raise StateError("not a doormat crypto state (no 'kind': 'doormat.crypto.device')")
    version = obj.get("version")
    if version != STATE_VERSION or isinstance(version, bool):
        raise StateVersionError(
            f"crypto state has version {version!r}; this code reads version {STATE_VERSION} "
            "only (a newer release wrote it, or it is damaged)"
        )
    return obj


def get(obj: Any, key: str) -> Any:
    if not isinstance(obj, dict) or key not in obj:
        raise StateError(f"crypto state lacks field {key!r}")
    return obj[key]


def get_dict(obj: Any, key: str) -> JSON:
    value = get(obj, key)
    if not isinstance(value, dict):
        raise StateError(f"crypto state field {key!r} must be an object")
    return value


def get_list(obj: Any, key: str) -> list[Any]:
    value = get(obj, key)
    if not isinstance(value, list):
        raise StateError(f"crypto state field {key!r} must be a list")
    return value


def get_int(obj: Any, key: str) -> int:
    return as_int(get(obj, key), key)


def as_int(value: Any, what: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < 2**32:
        raise StateError(f"crypto state field {what!r} must be an integer in [0, 2^32)")
    return value


def get_bool(obj: Any, key: str) -> bool:
    value = get(obj, key)
    if not isinstance(value, bool):
        raise StateError(f"crypto state field {key!r} must be true or false")
    return value


def get_str(obj: Any, key: str) -> str:
    value = get(obj, key)
    if not isinstance(value, str):
        raise StateError(f"crypto state field {key!r} must be a string")
    return value


def as_bytes(value: Any, what: str, length: int | None = None) -> bytes:
    try:
        return b64decode(value, f"crypto state field {what!r}", length=length)
    except B64Error as exc:
        raise StateError(str(exc)) from None


def get_bytes(obj: Any, key: str, length: int | None = None) -> bytes:
    return as_bytes(get(obj, key), key, length)


def get_optional_bytes(obj: Any, key: str, length: int | None = None) -> bytes | None:
    value = get(obj, key)
    return None if value is None else as_bytes(value, key, length)


def get_optional_time(obj: Any, key: str) -> int | None:
    """A time in milliseconds, or None; an absent field is None too (older states)."""
    if not isinstance(obj, dict):
        raise StateError(f"crypto state lacks field {key!r}")
    value = obj.get(key)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < 2**63:
        raise StateError(f"crypto state field {key!r} must be a time in ms, or null")
    return value
