"""Standard base64 (RFC 4648, with padding), as the tests write and read it."""

from __future__ import annotations

import base64
import os


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def unb64(text: str) -> bytes:
    """Strict: anything outside the base64 alphabet is an error, not skipped."""
    return base64.b64decode(text, validate=True)


def random_b64(n: int) -> str:
    """``n`` random bytes in base64 (a stand-in key, signature or ciphertext)."""
    return b64(os.urandom(n))
