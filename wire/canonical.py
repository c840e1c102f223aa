"""Canonical JSON: the one byte string that signatures and hashes are computed over.

Keys sorted, no insignificant whitespace, UTF-8, no NaN/Infinity, integers only where
a number is needed (floats have no single canonical text). This is the subset of
RFC 8785 (JCS) that our records use; ``canonical_bytes`` refuses what it cannot
encode canonically instead of guessing.
"""

from __future__ import annotations

import json
from typing import Any


class CanonicalError(ValueError):
    """A value cannot be encoded canonically."""


def _check(value: Any, path: str) -> None:
    if value is None or isinstance(value, (bool, str)):
        return
    if isinstance(value, int):
        return
    if isinstance(value, float):
        raise CanonicalError(f"{path}: floats have no canonical form; use an integer")
    if isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            _check(item, f"{path}[{i}]")
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise CanonicalError(f"{path}: object keys must be strings, got {key!r}")
            _check(item, f"{path}.{key}")
        return
    raise CanonicalError(f"{path}: cannot encode {type(value).__name__}")


def canonical_bytes(value: Any) -> bytes:
    _check(value, "$")
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")
