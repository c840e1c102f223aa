"""Padding of plaintexts to fixed size buckets, so the relay learns a bucket, not a length.

Scheme: ISO/IEC 7816-4 — append one 0x80 byte, then zero bytes up to the smallest bucket
that fits. It is unambiguous: the padded text always ends in ``0x80 00 .. 00`` and the
plaintext is everything before the last 0x80, whatever bytes the plaintext holds. So
the largest plaintext is one byte less than the largest bucket.

Buckets double from 256 bytes to 32 KiB. The largest is capped by the relay's envelope
limit (``wire.envelope.MAX_ENVELOPE_BYTES`` = 64 KiB): a 32 KiB bucket plus the 16-byte
AEAD tag is 43,712 bytes of base64 body, leaving room for the header, the prekey
message, the JSON fields and a 4 KiB ``ext``. The next power of two (64 KiB) could not
fit at all, and a 48 KiB bucket would overflow after base64 (65,558 bytes).
"""

from __future__ import annotations

from bisect import bisect_left

from .errors import PaddingError, PlaintextTooLong

BUCKETS: tuple[int, ...] = (256, 512, 1024, 2048, 4096, 8192, 16384, 32768)
MAX_PLAINTEXT: int = BUCKETS[-1] - 1
_BUCKET_SET = frozenset(BUCKETS)
_MARKER = b"\x80"
_ZEROS = bytes(BUCKETS[-1])


def bucket_for(length: int) -> int:
    """The padded size of a plaintext of ``length`` bytes."""
    i = bisect_left(BUCKETS, length + 1)  # +1 for the 0x80 marker
    if i == len(BUCKETS):
        raise PlaintextTooLong(
            f"plaintext is {length} bytes; the largest padding bucket holds "
            f"{MAX_PLAINTEXT} bytes (split the message or send the data out of band)"
        )
    return BUCKETS[i]


def pad(plaintext: bytes) -> bytes:
    """``plaintext || 0x80 || 0x00...`` up to the smallest bucket that fits."""
    # Most chat messages fit the smallest bucket: skip the search for them.
    size = BUCKETS[0] if len(plaintext) < BUCKETS[0] else bucket_for(len(plaintext))
    # One join of three parts (the zero tail sliced from a preallocated buffer) measured
    # fastest among concatenation, ljust and memoryview slicing.
    return b"".join((plaintext, _MARKER, _ZEROS[: size - len(plaintext) - 1]))


def unpad(padded: bytes) -> bytes:
    """Inverse of ``pad``; PaddingError if ``padded`` is not a padded bucket."""
    if len(padded) not in _BUCKET_SET:
        raise PaddingError(f"padded plaintext is {len(padded)} bytes, not a bucket size")
    end = padded.rfind(_MARKER)
    # Everything after the marker must be zero: anything else means no valid padding.
    if end < 0 or padded.count(0, end + 1) != len(padded) - end - 1:
        raise PaddingError("padded plaintext does not end in 0x80 followed by zero bytes")
    return padded[:end]
