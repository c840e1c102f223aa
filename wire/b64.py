"""Strict base64, written once: the encoder every actor writes with, and the one decoder
every parser of outside input reads with.

Standard alphabet (``A-Z a-z 0-9 + /``) with ``=`` padding, as ``base64.b64encode``
writes it. The decoder refuses

* anything that is not a ``str`` (a number, ``null``, bytes);
* characters outside the alphabet, missing or misplaced padding (``validate=True``:
  plain ``b64decode`` silently skips what it does not understand);
* a *non-canonical* spelling: plain ``b64decode`` ignores the unused low bits of the
  last character, so several strings decode to the same bytes. Re-encoding must give
  the input back, so one byte string has exactly one accepted text and a flipped bit in
  a key, a signature or a hash is always noticed;
* with ``length``, any other number of bytes.

Every refusal is a :class:`B64Error` (a ``ValueError``) whose message starts with the
field's name, e.g. ``'header' is not valid base64``. Callers with an error type of their
own catch it and re-raise theirs with the same message.
"""

from __future__ import annotations

import base64
import binascii


class B64Error(ValueError):
    """A field that is not strict, canonical base64 (of the expected length).

    ``field`` names the field as the caller described it; the message is one line,
    ``<field> <problem>``."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field} {problem}")
        self.field = field
        self.problem = problem


def b64encode(data: bytes) -> str:
    """Standard base64 with padding, as text."""
    return base64.b64encode(data).decode("ascii")


def b64decode(value: object, field: str, *, length: int | None = None) -> bytes:
    """Decode ``value`` strictly (see the module docstring) or raise :class:`B64Error`
    naming ``field``."""
    if not isinstance(value, str):
        raise B64Error(field, "must be a base64 string")
    try:
        raw = base64.b64decode(value.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError):
        raise B64Error(field, "is not valid base64") from None
    if b64encode(raw) != value:
        raise B64Error(field, "is not canonical base64")
    if length is not None and len(raw) != length:
        raise B64Error(field, f"is {len(raw)} bytes, expected {length} bytes")
    return raw


__all__ = ["B64Error", "b64decode", "b64encode"]
