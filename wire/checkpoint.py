"""C2SP checkpoints (https://c2sp.org/tlog-checkpoint): a log's signed tree head.

A checkpoint is a signed note (see ``wire.note``) whose text is::

    <origin>
    <tree size, decimal, no leading zeros>
    <root hash, base64>
    [extension lines, each non-empty]

for example, as the audit ledger signs it::

    doormat.example/audit
    8
    XcnaeacGWamtVZy3Ad7ZoqudgjqtL0lgz+Nw7/RgQyg=

    — doormat.example/audit <base64(key ID || Ed25519 signature)>

The root is the RFC 6962 root (``wire.merkle``) of the first <size> entries; a client
holding an older checkpoint accepts a newer one only with a consistency proof between
them. Using this format rather than one of our own means a Go client
(golang.org/x/mod/sumdb/note, transparency-dev/formats) can read our checkpoints, and
a Tessera-based log can replace ours without changing clients.

Parsing is strict: the body must be exactly this shape (32-byte SHA-256 root, size
below 2^64, no empty extension lines), and anything else is refused with a reason.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from wire.b64 import B64Error, b64decode, b64encode
from wire.merkle import HASH_SIZE
from wire.note import (
    MAX_NOTE_BYTES,
    NoteError,
    Signer,
    VerifiedNote,
    Verifier,
    open_note,
    sign_note,
)

#: Tree sizes are uint64 in every implementation we interoperate with.
MAX_TREE_SIZE = 2**64 - 1
#: A checkpoint body is three short lines; extensions are discouraged by the spec.
MAX_CHECKPOINT_BYTES = 16 * 1024

_SIZE_RE = re.compile(r"0|[1-9][0-9]*")


class CheckpointError(ValueError):
    """A checkpoint body that is malformed, or a checkpoint that does not verify."""


def _check_line(line: str, what: str) -> None:
    if not line:
        raise CheckpointError(f"checkpoint {what} is empty")
    for ch in line:
        if ord(ch) < 0x20:
            raise CheckpointError(f"checkpoint {what} contains control character U+{ord(ch):04X}")


@dataclass(frozen=True)
class Checkpoint:
    """Origin, tree size, root hash, and optional extension lines."""

    origin: str
    size: int
    root: bytes
    extensions: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.origin, str):
            raise CheckpointError("checkpoint origin must be a string")
        _check_line(self.origin, "origin")
        if isinstance(self.size, bool) or not isinstance(self.size, int):
            raise CheckpointError("checkpoint size must be an int")
        if not 0 <= self.size <= MAX_TREE_SIZE:
            raise CheckpointError(f"checkpoint size {self.size} is outside 0..2^64-1")
        if not isinstance(self.root, bytes) or len(self.root) != HASH_SIZE:
            raise CheckpointError(f"checkpoint root must be {HASH_SIZE} bytes")
        for i, line in enumerate(self.extensions):
            if not isinstance(line, str):
                raise CheckpointError(f"checkpoint extension line {i + 1} must be a string")
            _check_line(line, f"extension line {i + 1}")

    def body(self) -> str:
        """The note text: the bytes a signature covers."""
        root = b64encode(self.root)
        lines = [self.origin, str(self.size), root, *self.extensions]
        return "".join(line + "\n" for line in lines)


def parse_checkpoint(body: str) -> Checkpoint:
    """Parse a checkpoint body (the note text, without signatures)."""
    if not isinstance(body, str):
        raise TypeError("a checkpoint body is str")
    if len(body.encode("utf-8", "surrogatepass")) > MAX_CHECKPOINT_BYTES:
        raise CheckpointError(f"checkpoint body is larger than {MAX_CHECKPOINT_BYTES} bytes")
    if not body.endswith("\n"):
        raise CheckpointError("checkpoint body does not end with a newline")
    lines = body[:-1].split("\n")
    if len(lines) < 3:
        raise CheckpointError(
            f"checkpoint body has {len(lines)} lines, needs origin, size and root hash"
        )
    origin, size_text, root_text, *extensions = lines
    _check_line(origin, "origin")
    if not _SIZE_RE.fullmatch(size_text):
        raise CheckpointError(
            f"checkpoint size {size_text[:40]!r} is not a decimal number without leading zeros"
        )
    # Bound the length before int(): a 5000-digit size is malformed, not a slow parse.
    if len(size_text) > 20 or int(size_text) > MAX_TREE_SIZE:
        raise CheckpointError("checkpoint size is larger than 2^64-1")
    try:
        root = b64decode(root_text, "checkpoint root hash", length=HASH_SIZE)
    except B64Error as exc:
        raise CheckpointError(str(exc)) from None
    for i, line in enumerate(extensions):
        _check_line(line, f"extension line {i + 1}")
    return Checkpoint(origin, int(size_text), root, tuple(extensions))


def sign_checkpoint(checkpoint: Checkpoint, *signers: Signer) -> str:
    """Sign a checkpoint; returns the signed note text.

    The spec says the log's key name SHOULD be the origin; ``open_checkpoint`` insists on
    it by default, so sign with a key named after the origin.
    """
    return sign_note(checkpoint.body(), *signers)


@dataclass(frozen=True)
class VerifiedCheckpoint:
    """A checkpoint together with the note that carried it and who verifiably signed it."""

    checkpoint: Checkpoint
    note: VerifiedNote


def open_checkpoint(
    data: bytes | str,
    verifiers: Iterable[Verifier],
    *,
    origin: str | None = None,
    require_origin_key: bool = True,
    max_bytes: int = MAX_NOTE_BYTES,
) -> VerifiedCheckpoint:
    """Verify a signed checkpoint against known keys and parse its body.

    Note rules (``wire.note.open_note``): unknown signatures are ignored, every
    signature from a known key must verify, at least one must. Then the body must parse;
    if ``origin`` is given the checkpoint must be for that log; and unless
    ``require_origin_key`` is False, one of the verified signatures must be from a key
    named as the origin, i.e. the log itself vouches for it, not only, say, a witness
    that also happens to be trusted for something else.

    Raises ``CheckpointError`` (wrapping the note's error where the note failed).
    """
    try:
        note = open_note(data, verifiers, max_bytes=max_bytes)
    except NoteError as exc:
        raise CheckpointError(str(exc)) from exc
    checkpoint = parse_checkpoint(note.text)
    if origin is not None and checkpoint.origin != origin:
        raise CheckpointError(
            f"checkpoint is for origin {checkpoint.origin!r}, expected {origin!r}"
        )
    if require_origin_key and checkpoint.origin not in note.signers:
        raise CheckpointError(
            f"checkpoint for {checkpoint.origin!r} is not signed by a known key of that name"
        )
    return VerifiedCheckpoint(checkpoint, note)


def verifiers_from_vkeys(vkeys: Sequence[str]) -> list[Verifier]:
    """Parse verifier keys in their text form (``<name>+<hex id>+<base64 key>``)."""
    return [Verifier.from_vkey(vkey) for vkey in vkeys]
