"""The audit ledger's verifier, sans I/O: :class:`LogVerifier` checks a stored log row by
row (entries re-hashed, both trees rebuilt, checkpoints' signatures, roots and
consistency) and returns a :class:`VerifyReport` that locates every problem.

The SQLite store (``interceptor.ledger.store``) reads the rows and feeds them in; this
module never touches the file.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from interceptor.ledger.entries import parse_entry
from interceptor.ledger.errors import EntryError, LedgerError
from wire.b64 import b64encode
from wire.checkpoint import Checkpoint, CheckpointError, open_checkpoint, parse_checkpoint
from wire.merkle import HASH_SIZE, MerkleTree, ProofError, hash_leaf, verify_consistency
from wire.note import (
    InvalidSignatureError,
    MalformedNoteError,
    NoteError,
    UnverifiedNoteError,
    Verifier,
    parse_note,
)


def _short(h: bytes) -> str:
    return h[:6].hex() + "…"


@dataclass(frozen=True)
class Problem:
    """One thing wrong, and where: ``entry 17: leaf hash does not match its content``."""

    where: str
    message: str

    def __post_init__(self) -> None:
        # One problem, one line: SQLite's own messages may span several.
        object.__setattr__(self, "where", " ".join(self.where.split()))
        object.__setattr__(self, "message", " ".join(self.message.split()))

    def __str__(self) -> str:
        return f"{self.where}: {self.message}"


@dataclass(frozen=True)
class VerifyReport:
    """What ``verify`` found. ``ok`` when there is no problem at all."""

    origin: str | None
    entries: int  # entry rows read
    size: int  # leaves of the recomputed tree
    root: bytes  # the recomputed root over the entries' content
    checkpoints: int
    checkpoints_verified: int  # signature valid and root equal to the recomputed one
    latest: Checkpoint | None  # the last checkpoint that verified
    problems: tuple[Problem, ...]
    # The witness's latest cosigned checkpoint, when one was given and its signatures
    # verified (whether the ledger agrees with it is among the problems), and when.
    witnessed: Checkpoint | None = None
    witnessed_at: int | None = None

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "origin": self.origin,
            "entries": self.entries,
            "size": self.size,
            "root": b64encode(self.root),
            "checkpoints": self.checkpoints,
            "checkpoints_verified": self.checkpoints_verified,
            "latest_checkpoint": None
            if self.latest is None
            else {"size": self.latest.size, "root": b64encode(self.latest.root)},
            "problems": [{"where": p.where, "message": p.message} for p in self.problems],
            "witnessed": None
            if self.witnessed is None
            else {
                "size": self.witnessed.size,
                "root": b64encode(self.witnessed.root),
                "time": self.witnessed_at,
            },
        }

    def summary(self) -> str:
        head = (
            f"{self.entries} entries, root {_short(self.root)}, "
            f"{self.checkpoints_verified} of {self.checkpoints} checkpoints verified"
        )
        if self.latest is not None:
            head += f" (latest at size {self.latest.size})"
            if self.latest.size < self.size:
                head += (
                    f"; entries {self.latest.size}..{self.size - 1} are not yet covered by a "
                    "signed checkpoint"
                )
        elif self.size:
            head += "; no entry is covered by a signed checkpoint yet"
        if self.witnessed is not None:
            head += f"; consistent with the witness's checkpoint at size {self.witnessed.size}"
        else:
            head += (
                "; NOT checked against a witness: an older copy of this ledger would pass too"
            )
        return head


@dataclass
class _Mismatch:
    index: int
    stored: bytes
    content: bytes


@dataclass
class _TrustedCheckpoint:
    row: int
    checkpoint: Checkpoint


class LogVerifier:
    """Checks a stored log row by row, sans I/O; ``finish`` returns the VerifyReport.

    Feed every entry row in index order (``add_entry``), then every checkpoint row in
    the order they were stored (``add_checkpoint``). Values are taken as read from
    storage, of any type: a tampered row may hold anything. Each problem names the
    entry or checkpoint it is about; nothing stops at the first problem.

    Two trees are rebuilt: one from re-hashing every entry's content (the log as its
    content says) and one from the stored leaf hashes (the log as the writer signed it).
    Checkpoints are compared with the first; where an entry and its stored hash
    disagree, the two trees and a covering checkpoint tell which side was changed.
    """

    def __init__(self, origin: str | None, verifiers: Sequence[Verifier]) -> None:
        self._origin = origin
        self._verifiers = list(verifiers)
        self._content = MerkleTree()
        self._stored = MerkleTree()
        self._next = 0
        self._rows = 0
        self._problems: list[tuple[tuple[int, int, int], Problem]] = []
        self._mismatches: list[_Mismatch] = []
        self._checkpoints = 0
        self._trusted: list[_TrustedCheckpoint] = []
        self._verified = 0
        self._latest: Checkpoint | None = None
        self._entries_done = False
        self._witnessed: Checkpoint | None = None
        self._witnessed_at: int | None = None

    def problem(self, where: str, message: str) -> None:
        """A problem found by the caller (e.g. the storage itself is damaged)."""
        self._problems.append(((0, len(self._problems), 0), Problem(where, message)))

    def add_entry(self, index: object, data: object, leaf_hash: object) -> None:
        if self._entries_done:
            raise LedgerError("entries must all come before the checkpoints")
        self._rows += 1
        if isinstance(index, bool) or not isinstance(index, int):
            # INTEGER PRIMARY KEY cannot hold anything else; be safe anyway.
            self._add(1, self._next, f"entry after {self._next - 1}", "its index is not an integer")
            index = self._next
        if index > self._next:
            gap = (
                f"entry {self._next}"
                if index == self._next + 1
                else f"entries {self._next}..{index - 1}"
            )
            self._add(
                1,
                self._next,
                gap,
                f"missing (stored indices jump from {self._next - 1} to {index})",
            )
        self._next = index + 1
        where = f"entry {index}"

        if isinstance(data, str):
            self._add(1, index, where, "content is stored as text, not bytes")
            data = _text_bytes(data)
        if not isinstance(data, bytes):
            self._add(1, index, where, f"content is missing (stored {type(data).__name__})")
            data = b""
        content_hash = hash_leaf(data)

        stored: bytes | None = None
        if not isinstance(leaf_hash, bytes):
            self._add(
                1,
                index,
                where,
                f"stored leaf hash is {type(leaf_hash).__name__}, not {HASH_SIZE} bytes",
            )
        elif len(leaf_hash) != HASH_SIZE:
            self._add(
                1, index, where, f"stored leaf hash is {len(leaf_hash)} bytes, expected {HASH_SIZE}"
            )
        else:
            stored = leaf_hash
            if stored != content_hash:
                self._mismatches.append(_Mismatch(index, stored, content_hash))

        try:
            entry = parse_entry(data)
        except EntryError as exc:
            self._add(1, index, where, f"content is not a valid entry: {exc}")
        else:
            if entry.index != index:
                self._add(1, index, where, f"its content says it is entry {entry.index}")

        self._content.append_leaf_hash(content_hash)
        self._stored.append_leaf_hash(stored if stored is not None else content_hash)

    def add_checkpoint(self, row: int, size: object, note: object) -> None:
        self._entries_done = True
        self._checkpoints += 1
        stored_size = size if isinstance(size, int) and not isinstance(size, bool) else None
        where = f"checkpoint #{row}" if stored_size is None else f"checkpoint at size {stored_size}"
        order = (2, row, 0)
        if isinstance(note, str):
            note = _text_bytes(note)
        if not isinstance(note, bytes):
            self._add_at(order, where, f"note is missing (stored {type(note).__name__})")
            return

        try:
            verified = open_checkpoint(note, self._verifiers)
        except CheckpointError as exc:
            self._add_at(order, where, _checkpoint_failure(exc))
            return
        checkpoint = verified.checkpoint
        if stored_size is not None and checkpoint.size != stored_size:
            self._add_at(order, where, f"its signed note says size {checkpoint.size}")
        where = f"checkpoint at size {checkpoint.size}"
        ok = True
        if self._origin is not None and checkpoint.origin != self._origin:
            self._add_at(
                order,
                where,
                f"is for origin {checkpoint.origin!r}, the ledger's is {self._origin!r}",
            )
            ok = False
        if checkpoint.size > self._content.size:
            self._add_at(
                order,
                where,
                f"the log has only {self._content.size} entries: entries "
                f"{self._content.size}..{checkpoint.size - 1} are gone",
            )
            ok = False
        elif checkpoint.root != self._content.root(checkpoint.size):
            self._add_at(order, where, "root differs from the log's root at that size")
            ok = False

        # Consistency with the previous trusted checkpoint: the signed history must only
        # ever have grown. Computed from the content tree, so a rewrite between two
        # checkpoints shows here even if someone also re-signed a later one.
        if self._trusted:
            prev = self._trusted[-1].checkpoint
            if checkpoint.size < prev.size:
                self._add_at(
                    order,
                    where,
                    f"was signed after the checkpoint at size {prev.size}, yet is smaller: "
                    "the log shrank",
                )
                ok = False
            elif ok:
                # Only when this checkpoint matches the log: otherwise the root problem
                # above already says it, and a second line would be noise. It fires when
                # the key holder rewrote the log and signed the new history: the earlier
                # checkpoint then disagrees, and this one forks from it.
                try:
                    verify_consistency(
                        prev.size,
                        checkpoint.size,
                        self._content.consistency_proof(prev.size, checkpoint.size),
                        prev.root,
                        checkpoint.root,
                    )
                except ProofError as exc:
                    self._add_at(
                        order,
                        where,
                        f"not consistent with the earlier checkpoint at size {prev.size}: "
                        f"the signed history was rewritten ({exc.reason})",
                    )
                    ok = False
        self._trusted.append(_TrustedCheckpoint(row, checkpoint))
        if ok:
            self._verified += 1
            if self._latest is None or checkpoint.size >= self._latest.size:
                self._latest = checkpoint

    def add_witnessed(
        self, note: object, log_keys: Sequence[Verifier], witness_keys: Sequence[Verifier]
    ) -> None:
        """Check the ledger against the latest checkpoint the witness cosigned (from the
        witness's state, not from the ledger's file): it must carry a valid signature
        from a pinned log key *and* a cosignature from a pinned witness key, and the
        ledger must hold those entries - no fewer (an older copy restored, entries cut
        from the end), no others (a rewritten history, re-signed or not)."""
        self._entries_done = True
        where = "witness"
        if isinstance(note, str):
            note = _text_bytes(note)
        if not isinstance(note, bytes):
            self._add_at((3, 0, 0), where, "no witnessed checkpoint for this ledger's origin")
            return
        try:
            verified = open_checkpoint(note, [*log_keys, *witness_keys])
        except CheckpointError as exc:
            self._add_at((3, 0, 0), where, f"the witnessed checkpoint does not verify: "
                         f"{_checkpoint_failure(exc)}")
            return
        names = {k.name for k in witness_keys}
        cosigs = [s for s in verified.note.verified if s.name in names]
        checkpoint = verified.checkpoint
        if not cosigs:
            self._add_at((3, 0, 0), where, "the witnessed checkpoint carries no cosignature "
                         "from the given witness key")
            return
        if self._origin is not None and checkpoint.origin != self._origin:
            self._add_at((3, 0, 0), where, f"the witnessed checkpoint is for origin "
                         f"{checkpoint.origin!r}, the ledger's is {self._origin!r}")
            return
        at = int.from_bytes(cosigs[0].signature[:8], "big")
        self._witnessed, self._witnessed_at = checkpoint, at
        when = _utc(at)
        if checkpoint.size > self._content.size:
            self._add_at(
                (3, 0, 0),
                where,
                f"the witness cosigned this ledger at size {checkpoint.size} on {when}, but "
                f"it has only {self._content.size} entries: it was rolled back (an older "
                f"copy restored, or entries {self._content.size}..{checkpoint.size - 1} "
                "deleted)",
            )
        elif checkpoint.root != self._content.root(checkpoint.size):
            self._add_at(
                (3, 0, 0),
                where,
                f"the ledger's first {checkpoint.size} entries are not those the witness "
                f"cosigned on {when} (root {_short(checkpoint.root)}, the ledger's "
                f"{_short(self._content.root(checkpoint.size))}): its history was rewritten",
            )

    def finish(self) -> VerifyReport:
        for m in self._mismatches:
            message = (
                f"leaf hash does not match its content (stored {_short(m.stored)}, "
                f"content hashes to {_short(m.content)})"
            )
            # First among this entry's problems: it is the one that proves tampering.
            self._problems.append(
                ((1, m.index, -1), Problem(f"entry {m.index}", message + self._blame(m.index)))
            )
        problems = tuple(p for _, p in sorted(self._problems, key=lambda item: item[0]))
        return VerifyReport(
            origin=self._origin,
            entries=self._rows,
            size=self._content.size,
            root=self._content.root(),
            checkpoints=self._checkpoints,
            checkpoints_verified=self._verified,
            latest=self._latest,
            problems=problems,
            witnessed=self._witnessed,
            witnessed_at=self._witnessed_at,
        )

    def _blame(self, index: int) -> str:
        """Which side of a mismatch a signed checkpoint vouches for, if one tells."""
        for trusted in self._trusted:
            cp = trusted.checkpoint
            if not index < cp.size <= self._content.size:
                continue
            content_ok = self._content.root(cp.size) == cp.root
            stored_ok = self._stored.root(cp.size) == cp.root
            if content_ok and not stored_ok:
                return (
                    f"; the content agrees with the checkpoint at size {cp.size}, "
                    "so the stored leaf hash was changed"
                )
            if stored_ok and not content_ok:
                return (
                    f"; the stored leaf hash agrees with the checkpoint at size {cp.size}, "
                    "so the content was changed"
                )
            return ""
        return "; no signed checkpoint covers it"

    def _add(self, kind: int, index: int, where: str, message: str) -> None:
        self._add_at((kind, index, len(self._problems)), where, message)

    def _add_at(self, order: tuple[int, int, int], where: str, message: str) -> None:
        order = (order[0], order[1], len(self._problems))
        self._problems.append((order, Problem(where, message)))


def _utc(seconds: int) -> str:
    try:
        return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%d %H:%M:%SZ")
    except (OverflowError, OSError, ValueError):
        return f"{seconds} s since the epoch"


def _text_bytes(text: str) -> bytes:
    """Bytes back from a value SQLite handed over as text (the store decodes TEXT with
    surrogateescape, so this recovers the stored bytes exactly)."""
    try:
        return text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogatepass")


def _checkpoint_failure(exc: CheckpointError) -> str:
    cause = exc.__cause__
    if isinstance(cause, InvalidSignatureError):
        return f"signature invalid ({cause})"
    if isinstance(cause, UnverifiedNoteError):
        return f"not signed by any of the given keys ({cause})"
    if isinstance(cause, MalformedNoteError):
        return f"signed note is malformed: {cause}"
    if isinstance(cause, NoteError):
        return str(cause)
    return str(exc)


def peek_checkpoint(note: object) -> Checkpoint | None:
    """The checkpoint inside a stored note, signature *not* checked (for the report)."""
    if isinstance(note, str):
        note = _text_bytes(note)
    if not isinstance(note, bytes):
        return None
    try:
        return parse_checkpoint(parse_note(note).text)
    except (NoteError, CheckpointError):
        return None


__all__ = ["LogVerifier", "Problem", "VerifyReport", "peek_checkpoint"]
