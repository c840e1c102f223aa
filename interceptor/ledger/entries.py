"""The audit ledger's core, sans I/O: entries, the tree over them, checkpoints, proofs,
verification and the transparency report.

The interceptor logs *before* it acts: every warrant decision (accepted or refused),
every task start and stop, every record delivered to the agency, and the oversight
body's own events. Each entry is one JSON object in its canonical bytes
(``wire.canonical``)::

    {"index": 17, "payload": {...}, "time_ms": 1764400000123, "type": "task-start", "v": 1}

and is one leaf of an RFC 6962 Merkle tree (``wire.merkle``): leaf hash =
SHA-256(0x00 || entry bytes). The log signs C2SP checkpoints (``wire.checkpoint``) over
(size, root); with them anyone can check that an entry is in the log (inclusion proof)
and that the log only grew (consistency proof).

This module does no I/O and reads no clock: the caller passes ``time_ms``, and the
SQLite store (``interceptor.ledger_store``, which holds the ``Ledger`` class, ``verify``
and ``report``) persists what :class:`LedgerCore` prepares and feeds stored rows back
into :class:`LogVerifier` and :func:`transparency_report`. docs/ledger.md describes the
entry types field by field.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from interceptor.errors import InterceptError, StateError
from interceptor.trust import FINGERPRINT_RE, TOKEN_RE, exact_fields, load_json
from interceptor.warrant import (
    CASE_REFERENCE_RE,
    CATEGORIES,
    LIID_RE,
    TARGET_FORMATS,
    Decision,
    Warrant,
)
from wire.canonical import CanonicalError, canonical_bytes
from wire.checkpoint import (
    Checkpoint,
    CheckpointError,
    open_checkpoint,
    parse_checkpoint,
    sign_checkpoint,
)
from wire.ids import DEVICE_RE, USER_RE
from wire.merkle import (
    HASH_SIZE,
    MerkleTree,
    ProofError,
    hash_leaf,
    verify_consistency,
    verify_inclusion,
)
from wire.note import (
    InvalidSignatureError,
    MalformedNoteError,
    NoteError,
    Signer,
    UnverifiedNoteError,
    Verifier,
    is_valid_key_name,
    parse_note,
)

#: The SQLite file's format tag (stored in its meta table).
FORMAT = "doormat-ledger/1"
#: The ``v`` of every entry.
ENTRY_VERSION = 1
#: The log's name in its checkpoints; the signing key must carry the same name.
DEFAULT_ORIGIN = "doormat.example/ledger"
#: One entry's canonical bytes. A decision message is short; a huge entry is a bug.
MAX_ENTRY_BYTES = 64 * 1024
#: Integer milliseconds that JSON carries exactly everywhere (JavaScript's safe range).
MAX_TIME_MS = 2**53 - 1
_MAX_SECONDS = 2**53 - 1
_MAX_SEQUENCE = 2**63 - 1

WARRANT_DECISION = "warrant-decision"
TASK_START = "task-start"
TASK_STOP = "task-stop"
RECORD_DELIVERED = "record-delivered"
OVERSIGHT = "oversight"
ENTRY_TYPES = (WARRANT_DECISION, TASK_START, TASK_STOP, RECORD_DELIVERED, OVERSIGHT)

REPORT_FORMAT = "doormat-transparency-report/1"

_TASK_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$")
_UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
# Who handed the record over: "relay", "enterprise:acme", "archive:acme".
_SOURCE_RE = re.compile(r"^[a-z0-9][a-z0-9_.:@-]{0,63}$")
# An oversight actor is a person's or body's name, shown to people.
_ACTOR_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 ._'():@/-]{0,127}$")
_MAX_TEXT = 4096
_MAX_TARGETS = 1000
_MAX_TARGET_CHARS = 256


class LedgerError(InterceptError):
    """The ledger cannot do what was asked: a refused entry, a damaged or foreign file,
    a checkpoint without a signing key, a proof for sizes the log does not have."""


class EntryError(LedgerError):
    """A ledger entry that is not valid: refused by ``append``, reported by ``verify``."""


# ------------------------------------------------------------------------------ entries


def _where(what: str, key: str) -> str:
    return f"{what}: field {key!r}"


def _text(
    p: Mapping[str, Any],
    key: str,
    what: str,
    *,
    pattern: re.Pattern[str] | None = None,
    hint: str = "",
    max_chars: int = 256,
    nullable: bool = False,
) -> None:
    value = p[key]
    if value is None and nullable:
        return
    if not isinstance(value, str):
        raise EntryError(f"{_where(what, key)} must be a string")
    if len(value) > max_chars:
        raise EntryError(f"{_where(what, key)} is longer than {max_chars} characters")
    if pattern is not None and not pattern.fullmatch(value):
        raise EntryError(f"{_where(what, key)} must be {hint}, got {value[:80]!r}")


def _integer(p: Mapping[str, Any], key: str, what: str, low: int, high: int) -> int:
    value = p[key]
    # bool is an int in Python; true is not a number in a log.
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise EntryError(f"{_where(what, key)} must be an integer in {low}..{high}")
    return value


def _categories(value: object, what: str) -> list[str]:
    if not isinstance(value, list) or not 1 <= len(value) <= len(CATEGORIES):
        raise EntryError(f"{what}: field 'categories' must be a non-empty list")
    if any(c not in CATEGORIES for c in value) or len(set(value)) != len(value):
        raise EntryError(
            f"{what}: field 'categories' may hold only {' and '.join(CATEGORIES)}, once each"
        )
    return value


def _targets(value: object, what: str, *, exact: bool) -> list[dict[str, str]]:
    """Targets as ``{format, value}``. ``exact``: each value must be a real device or user
    id (a task never covers a pattern); otherwise any bounded string, because a refused
    warrant's wildcard target is exactly what the log must be able to show."""
    if not isinstance(value, list) or not 1 <= len(value) <= _MAX_TARGETS:
        raise EntryError(f"{what}: field 'targets' must be a non-empty list")
    seen: set[tuple[str, str]] = set()
    for i, item in enumerate(value):
        t = exact_fields(item, f"{what}: target #{i + 1}", ("format", "value"), EntryError)
        fmt, val = t["format"], t["value"]
        if fmt not in TARGET_FORMATS:
            raise EntryError(
                f"{what}: target #{i + 1}: 'format' must be one of {', '.join(TARGET_FORMATS)}"
            )
        if not isinstance(val, str) or not 0 < len(val) <= _MAX_TARGET_CHARS:
            raise EntryError(f"{what}: target #{i + 1}: 'value' must be a non-empty string")
        if exact and not (DEVICE_RE if fmt == "device" else USER_RE).fullmatch(val):
            raise EntryError(f"{what}: target #{i + 1}: {val[:80]!r} is not a {fmt} id")
        if (fmt, val) in seen:
            raise EntryError(f"{what}: target #{i + 1} repeats {fmt}:{val[:80]}")
        seen.add((fmt, val))
    return value


_DECISION_FIELDS = tuple(f.name for f in dataclasses.fields(Decision))
_DECISION_EXTRA = ("categories", "targets")


def _check_warrant_decision(p: dict[str, Any], what: str) -> None:
    # The payload is Decision.to_json() without its "type" (the entry has one), plus,
    # optionally, the warrant's categories and targets, which the Decision does not
    # carry and the transparency report counts.
    unknown = p.keys() - set(_DECISION_FIELDS) - set(_DECISION_EXTRA)
    if unknown:
        raise EntryError(f"{what} has unknown field(s): {', '.join(sorted(unknown))}")
    try:
        Decision.from_json(
            {"type": WARRANT_DECISION, **{k: p[k] for k in _DECISION_FIELDS if k in p}}
        )
    except StateError as exc:
        raise EntryError(f"{what}: {exc}") from None
    if p.get("categories") is not None:
        _categories(p["categories"], what)
    if p.get("targets") is not None:
        _targets(p["targets"], what, exact=False)


_TASK_START_FIELDS = (
    "task_id",
    "authorisation_id",
    "generation",
    "case_reference",
    "liid",
    "targets",
    "categories",
    "not_before",
    "not_after",
)


def _check_task_start(p: dict[str, Any], what: str) -> None:
    exact_fields(p, what, _TASK_START_FIELDS, EntryError)
    _text(p, "task_id", what, pattern=_TASK_ID_RE, hint="a task id")
    _text(p, "authorisation_id", what, pattern=_UUID_RE, hint="a lower-case UUID")
    _integer(p, "generation", what, 1, _MAX_SECONDS)
    _text(p, "case_reference", what, pattern=CASE_REFERENCE_RE, hint="a case reference")
    _text(p, "liid", what, pattern=LIID_RE, hint="a LIID")
    _targets(p["targets"], what, exact=True)
    _categories(p["categories"], what)
    start = _integer(p, "not_before", what, 0, _MAX_SECONDS)
    if _integer(p, "not_after", what, 0, _MAX_SECONDS) <= start:
        raise EntryError(f"{what}: field 'not_after' must be later than 'not_before'")


_TASK_STOP_FIELDS = ("task_id", "authorisation_id", "case_reference", "liid", "reason")


def _check_task_stop(p: dict[str, Any], what: str) -> None:
    exact_fields(p, what, _TASK_STOP_FIELDS, EntryError)
    _text(p, "task_id", what, pattern=_TASK_ID_RE, hint="a task id")
    _text(p, "authorisation_id", what, pattern=_UUID_RE, hint="a lower-case UUID")
    _text(p, "case_reference", what, pattern=CASE_REFERENCE_RE, hint="a case reference")
    _text(p, "liid", what, pattern=LIID_RE, hint="a LIID")
    _text(p, "reason", what, pattern=TOKEN_RE, hint="a lower-case token (e.g. 'cancelled')")


_RECORD_FIELDS = (
    "task_id",
    "liid",
    "case_reference",
    "category",
    "sequence",
    "digest",
    "plaintext",
    "source",
)


def _check_record(p: dict[str, Any], what: str) -> None:
    exact_fields(p, what, _RECORD_FIELDS, EntryError)
    _text(p, "task_id", what, pattern=_TASK_ID_RE, hint="a task id", nullable=True)
    _text(p, "liid", what, pattern=LIID_RE, hint="a LIID")
    _text(p, "case_reference", what, pattern=CASE_REFERENCE_RE, hint="a case reference")
    category = p["category"]
    if category not in CATEGORIES:
        raise EntryError(f"{_where(what, 'category')} must be one of {', '.join(CATEGORIES)}")
    _integer(p, "sequence", what, 0, _MAX_SEQUENCE)
    _text(p, "digest", what, pattern=FINGERPRINT_RE, hint="64 lower-case hex digits (SHA-256)")
    # "Was the content readable?" is a question about CC only: an IRI record is
    # metadata the relay itself produced, so for IRI the field is null.
    plaintext = p["plaintext"]
    if category == "CC" and not isinstance(plaintext, bool):
        raise EntryError(f"{_where(what, 'plaintext')} must be true or false for a CC record")
    if category == "IRI" and plaintext is not None:
        raise EntryError(f"{_where(what, 'plaintext')} must be null for an IRI record")
    _text(p, "source", what, pattern=_SOURCE_RE, hint="a source token like 'relay'")


_OVERSIGHT_FIELDS = ("event", "actor", "detail")


def _check_oversight(p: dict[str, Any], what: str) -> None:
    exact_fields(p, what, _OVERSIGHT_FIELDS, EntryError)
    _text(p, "event", what, pattern=TOKEN_RE, hint="a lower-case token (e.g. 'inspection')")
    _text(p, "actor", what, pattern=_ACTOR_RE, hint="a name", max_chars=128)
    _text(p, "detail", what, max_chars=_MAX_TEXT)


_CHECKS = {
    WARRANT_DECISION: _check_warrant_decision,
    TASK_START: _check_task_start,
    TASK_STOP: _check_task_stop,
    RECORD_DELIVERED: _check_record,
    OVERSIGHT: _check_oversight,
}


def check_payload(entry_type: str, payload: object) -> dict[str, Any]:
    """Validate a payload for its entry type; return it. Raises EntryError."""
    check = _CHECKS.get(entry_type) if isinstance(entry_type, str) else None
    if check is None:
        raise EntryError(f"unknown entry type {entry_type!r}: use one of {', '.join(ENTRY_TYPES)}")
    what = f"{entry_type} payload"
    if not isinstance(payload, dict):
        raise EntryError(f"{what} must be a JSON object")
    check(payload, what)
    return payload


@dataclass(frozen=True)
class Entry:
    """One ledger entry as stored: its position, when, what kind, and the details."""

    index: int
    time_ms: int
    type: str
    payload: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {
            "v": ENTRY_VERSION,
            "index": self.index,
            "time_ms": self.time_ms,
            "type": self.type,
            "payload": self.payload,
        }

    def encode(self) -> bytes:
        """The canonical bytes: what is stored and hashed."""
        return canonical_bytes(self.to_json())

    @property
    def leaf_hash(self) -> bytes:
        return hash_leaf(self.encode())


def make_entry(index: int, entry: Mapping[str, Any], *, time_ms: int) -> Entry:
    """Build the entry at ``index`` from ``{"type": ..., **payload}``; raises EntryError.

    ``entry`` is flat so that ``Decision.to_json()`` (which has ``"type":
    "warrant-decision"``) can be logged as is; everything but ``type`` is the payload.
    """
    if not isinstance(entry, Mapping):
        raise EntryError("an entry is a JSON object with a 'type'")
    if "type" not in entry:
        raise EntryError("an entry needs a 'type'")
    if isinstance(time_ms, bool) or not isinstance(time_ms, int) or not 0 <= time_ms <= MAX_TIME_MS:
        raise EntryError(f"time_ms must be an integer in 0..{MAX_TIME_MS} (milliseconds)")
    if isinstance(index, bool) or not isinstance(index, int) or index < 0:
        raise EntryError("an entry index is a non-negative integer")
    payload = {k: v for k, v in entry.items() if k != "type"}
    try:
        # A round trip through canonical bytes turns tuples into lists and copies the
        # payload, so the stored entry is exactly what parse_entry will read back, and
        # a caller mutating its dict afterwards changes nothing.
        data = canonical_bytes(
            {
                "v": ENTRY_VERSION,
                "index": index,
                "time_ms": time_ms,
                "type": entry["type"],
                "payload": payload,
            }
        )
    except CanonicalError as exc:
        raise EntryError(f"entry cannot be encoded canonically: {exc}") from None
    if len(data) > MAX_ENTRY_BYTES:
        raise EntryError(f"entry is {len(data)} bytes, over the {MAX_ENTRY_BYTES}-byte limit")
    return parse_entry(data)


def parse_entry(data: bytes) -> Entry:
    """Read stored entry bytes back, strictly: canonical JSON of a valid entry, or EntryError."""
    if not isinstance(data, bytes):
        raise EntryError(f"entry content is {type(data).__name__}, not bytes")
    obj = load_json(data, "entry", EntryError, MAX_ENTRY_BYTES)
    top = exact_fields(obj, "entry", ("v", "index", "time_ms", "type", "payload"), EntryError)
    if top["v"] != ENTRY_VERSION or isinstance(top["v"], bool):
        raise EntryError(f"entry version {top['v']!r} is not {ENTRY_VERSION}")
    index = _integer(top, "index", "entry", 0, 2**63 - 1)
    time_ms = _integer(top, "time_ms", "entry", 0, MAX_TIME_MS)
    payload = check_payload(top["type"], top["payload"])
    try:
        canonical = canonical_bytes(obj)
    except CanonicalError as exc:
        raise EntryError(f"entry is not canonical JSON: {exc}") from None
    # One entry, one byte string: otherwise the same entry could be stored in many
    # spellings with different leaf hashes.
    if canonical != data:
        raise EntryError("entry is not in canonical form (key order, spacing or escapes)")
    return Entry(index, time_ms, top["type"], payload)


# -- builders: what the interceptor and the oversight body log --------------------------


def warrant_decision_entry(decision: Decision, warrant: Warrant | None = None) -> dict[str, Any]:
    """The entry for a warrant decision: ``Decision.to_json()``, plus the warrant's
    categories and targets when the warrant could be parsed (a refused forgery included),
    so that the report can count per category and list targets."""
    entry = decision.to_json()
    if warrant is not None:
        if decision.digest != warrant.digest:
            raise EntryError("the warrant given is not the one the decision is about (digest)")
        entry["categories"] = list(warrant.categories)
        entry["targets"] = [t.to_json() for t in warrant.targets]
    return entry


def task_start_entry(task_id: str, warrant: Warrant) -> dict[str, Any]:
    """A task provisioned at the relay for exactly this warrant's targets and window."""
    return {
        "type": TASK_START,
        "task_id": task_id,
        "authorisation_id": warrant.authorisation_id,
        "generation": warrant.generation,
        "case_reference": warrant.case_reference,
        "liid": warrant.liid,
        "targets": [t.to_json() for t in warrant.targets],
        "categories": list(warrant.categories),
        "not_before": warrant.not_before,
        "not_after": warrant.not_after,
    }


def task_stop_entry(
    task_id: str, *, authorisation_id: str, case_reference: str, liid: str, reason: str
) -> dict[str, Any]:
    """A task withdrawn: ``reason`` is a token such as ``cancelled``, ``expired``,
    ``updated`` (replaced by a newer generation) or ``shutdown``."""
    return {
        "type": TASK_STOP,
        "task_id": task_id,
        "authorisation_id": authorisation_id,
        "case_reference": case_reference,
        "liid": liid,
        "reason": reason,
    }


def record_delivered_entry(
    *,
    liid: str,
    case_reference: str,
    category: str,
    sequence: int,
    delivered: bytes,
    plaintext: bool | None,
    source: str,
    task_id: str | None = None,
) -> dict[str, Any]:
    """One HI-2 (IRI) or HI-3 (CC) record handed to the agency.

    ``delivered`` is the ciphertext as sent to the agency; only its SHA-256 is logged,
    so the ledger proves *what* was delivered without holding it. ``plaintext`` (CC
    only) says whether the content inside was readable by the agency, i.e. came from a
    party holding a key, or was end-to-end ciphertext nobody in the chain could open.
    """
    return {
        "type": RECORD_DELIVERED,
        "task_id": task_id,
        "liid": liid,
        "case_reference": case_reference,
        "category": category,
        "sequence": sequence,
        "digest": hashlib.sha256(delivered).hexdigest(),
        "plaintext": plaintext,
        "source": source,
    }


def oversight_entry(event: str, actor: str, detail: str = "") -> dict[str, Any]:
    """An oversight event: an inspection, a verification, a published report."""
    return {"type": OVERSIGHT, "event": event, "actor": actor, "detail": detail}


# ----------------------------------------------------------------------- the core log


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _short(h: bytes) -> str:
    return h[:6].hex() + "…"


@dataclass(frozen=True)
class Receipt:
    """What ``append`` returns once the entry is durable: where it is and the new head."""

    index: int
    leaf_hash: bytes
    tree_size: int
    root: bytes


@dataclass(frozen=True)
class PreparedEntry:
    """An entry ready to be stored; it joins the tree only when ``commit`` is called."""

    entry: Entry
    data: bytes
    leaf_hash: bytes


@dataclass(frozen=True)
class InclusionProof:
    index: int
    size: int
    leaf_hash: bytes
    root: bytes
    hashes: tuple[bytes, ...]

    def to_json(self) -> dict[str, Any]:
        """transparency-dev's JSON form, as ``doormat ledger verify-proof`` reads it."""
        return {
            "leafIdx": self.index,
            "treeSize": self.size,
            "root": _b64(self.root),
            "leafHash": _b64(self.leaf_hash),
            "proof": [_b64(h) for h in self.hashes],
        }

    def verify(self) -> None:
        verify_inclusion(self.index, self.size, self.leaf_hash, list(self.hashes), self.root)


@dataclass(frozen=True)
class ConsistencyProof:
    size1: int
    size2: int
    root1: bytes
    root2: bytes
    hashes: tuple[bytes, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "size1": self.size1,
            "size2": self.size2,
            "root1": _b64(self.root1),
            "root2": _b64(self.root2),
            "proof": [_b64(h) for h in self.hashes],
        }

    def verify(self) -> None:
        verify_consistency(self.size1, self.size2, list(self.hashes), self.root1, self.root2)


def check_origin(origin: str) -> str:
    # The origin doubles as the signing key's name (the checkpoint spec's SHOULD, which
    # wire.checkpoint enforces), so it must be a valid key name as well.
    if not is_valid_key_name(origin):
        raise LedgerError(f"ledger origin {origin!r} must be non-empty without spaces or '+'")
    return origin


class LedgerCore:
    """The log in memory: the Merkle tree over the stored leaf hashes, and what to store next.

    Two-phase append so that the store decides durability: ``prepare`` validates and
    encodes the next entry without changing anything; the store writes it and commits;
    only then ``commit`` adds it to the tree and returns the receipt. A failed write
    leaves the core exactly as it was.
    """

    def __init__(self, origin: str = DEFAULT_ORIGIN, leaf_hashes: Iterable[bytes] = ()) -> None:
        self._origin = check_origin(origin)
        try:
            self._tree = MerkleTree.from_leaf_hashes(leaf_hashes)
        except LedgerError:
            raise  # the store's own, more precise, complaint about its rows
        except ValueError as exc:
            raise LedgerError(f"stored leaf hashes are unusable: {exc}") from None

    @property
    def origin(self) -> str:
        return self._origin

    @property
    def size(self) -> int:
        return self._tree.size

    def root(self, size: int | None = None) -> bytes:
        try:
            return self._tree.root(size)
        except (ValueError, TypeError) as exc:
            raise LedgerError(str(exc)) from None

    def leaf_hash(self, index: int) -> bytes:
        try:
            return self._tree.leaf_hash(index)
        except IndexError as exc:
            raise LedgerError(str(exc)) from None

    def prepare(self, entry: Mapping[str, Any], *, time_ms: int) -> PreparedEntry:
        made = make_entry(self._tree.size, entry, time_ms=time_ms)
        data = made.encode()
        return PreparedEntry(made, data, hash_leaf(data))

    def commit(self, prepared: PreparedEntry) -> Receipt:
        if prepared.entry.index != self._tree.size:
            raise LedgerError(
                f"prepared entry {prepared.entry.index} is not the next one ({self._tree.size})"
            )
        index = self._tree.append_leaf_hash(prepared.leaf_hash)
        return Receipt(index, prepared.leaf_hash, self._tree.size, self._tree.root())

    def checkpoint(self, signer: Signer) -> tuple[Checkpoint, str]:
        """A signed C2SP checkpoint over the current size and root."""
        if signer.name != self._origin:
            raise LedgerError(
                f"the signing key is named {signer.name!r}; the ledger's checkpoints need a "
                f"key named as its origin {self._origin!r}"
            )
        checkpoint = Checkpoint(self._origin, self._tree.size, self._tree.root())
        return checkpoint, sign_checkpoint(checkpoint, signer)

    def inclusion_proof(self, index: int, size: int | None = None) -> InclusionProof:
        size = self._tree.size if size is None else size
        if not 0 <= size <= self._tree.size:
            raise LedgerError(f"size {size} is outside the log's history (0..{self._tree.size})")
        if not 0 <= index < size:
            raise LedgerError(f"entry {index} is not in the first {size} entries of the log")
        hashes = self._tree.inclusion_proof(index, size)
        return InclusionProof(
            index, size, self._tree.leaf_hash(index), self._tree.root(size), tuple(hashes)
        )

    def consistency_proof(self, size1: int, size2: int | None = None) -> ConsistencyProof:
        size2 = self._tree.size if size2 is None else size2
        if not 0 <= size1 <= size2 <= self._tree.size:
            raise LedgerError(
                f"sizes {size1} and {size2} must satisfy 0 <= size1 <= size2 <= {self._tree.size}"
            )
        hashes = self._tree.consistency_proof(size1, size2)
        return ConsistencyProof(
            size1, size2, self._tree.root(size1), self._tree.root(size2), tuple(hashes)
        )


# --------------------------------------------------------------------------- verify


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

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "origin": self.origin,
            "entries": self.entries,
            "size": self.size,
            "root": _b64(self.root),
            "checkpoints": self.checkpoints,
            "checkpoints_verified": self.checkpoints_verified,
            "latest_checkpoint": None
            if self.latest is None
            else {"size": self.latest.size, "root": _b64(self.latest.root)},
            "problems": [{"where": p.where, "message": p.message} for p in self.problems],
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


# --------------------------------------------------------------------------- report


def _target_text(t: Mapping[str, Any]) -> str:
    return f"{t['format']}:{t['value']}"


def _warrant_counts() -> dict[str, Any]:
    return {"decisions": 0, "accepted": 0, "refused": 0, "by_reason": {}, "by_action": {}}


def _category_counts() -> dict[str, Any]:
    return {c: {"accepted": 0, "refused": 0} for c in (*CATEGORIES, "unknown")}


def _record_counts() -> dict[str, int]:
    return {"IRI": 0, "CC": 0, "cc_with_plaintext": 0, "cc_ciphertext_only": 0}


def _new_case() -> dict[str, Any]:
    return {
        "authorisations": set(),
        "liids": set(),
        "warrants": _warrant_counts(),
        "categories": _category_counts(),
        "targets": set(),
        "targets_refused": set(),
        "tasks": {"started": 0, "stopped": 0, "running_at_end": 0},
        "records": _record_counts(),
    }


def _bump(counter: dict[str, int], key: str) -> None:
    counter[key] = counter.get(key, 0) + 1


@dataclass
class _Authorisation:
    generation: int
    liid: str
    case: str
    cancelled: bool
    categories: list[str] | None
    targets: set[str] | None


@dataclass
class _Task:
    authorisation_id: str
    liid: str
    case: str
    categories: list[str]


class _Scope:
    """Replays the log's decisions and tasks to check each act against what allowed it:
    the "log before act" rule, seen from the log itself."""

    def __init__(self) -> None:
        self.authorisations: dict[str, _Authorisation] = {}
        self.tasks: dict[str, _Task] = {}
        self.anomalies: list[str] = []

    def flag(self, entry: Entry, message: str) -> None:
        self.anomalies.append(f"entry {entry.index}: {message}")

    def decision(self, entry: Entry) -> None:
        p = entry.payload
        if not p["accepted"]:
            return
        aid = p["authorisation_id"]
        known = self.authorisations.get(aid)
        categories = p.get("categories")
        targets = p.get("targets")
        if p["action"] == "cancel":
            if known is not None:
                known.cancelled = True
                known.generation = p["generation"]
            else:
                self.authorisations[aid] = _Authorisation(
                    p["generation"],
                    p["liid"],
                    p["case_reference"],
                    True,
                    categories,
                    None if targets is None else {_target_text(t) for t in targets},
                )
            return
        self.authorisations[aid] = _Authorisation(
            p["generation"],
            p["liid"],
            p["case_reference"],
            False,
            categories,
            None if targets is None else {_target_text(t) for t in targets},
        )

    def task_start(self, entry: Entry) -> None:
        p = entry.payload
        auth = self.authorisations.get(p["authorisation_id"])
        task = p["task_id"]
        if auth is None:
            self.flag(entry, f"task {task} started with no accepted warrant logged before it")
        elif auth.cancelled:
            self.flag(entry, f"task {task} started for a cancelled authorisation")
        elif auth.generation != p["generation"]:
            self.flag(
                entry,
                f"task {task} started for generation {p['generation']}, but the accepted "
                f"generation is {auth.generation}",
            )
        else:
            if auth.targets is not None:
                extra = sorted({_target_text(t) for t in p["targets"]} - auth.targets)
                if extra:
                    self.flag(
                        entry,
                        f"task {task} covers targets the warrant does not name: "
                        + ", ".join(extra),
                    )
            if auth.categories is not None:
                extra = sorted(set(p["categories"]) - set(auth.categories))
                if extra:
                    self.flag(
                        entry,
                        f"task {task} collects categories the warrant does not allow: "
                        + ", ".join(extra),
                    )
        if task in self.tasks:
            self.flag(entry, f"task {task} started again while running")
        self.tasks[task] = _Task(
            p["authorisation_id"], p["liid"], p["case_reference"], list(p["categories"])
        )

    def task_stop(self, entry: Entry) -> None:
        task = entry.payload["task_id"]
        if self.tasks.pop(task, None) is None:
            self.flag(entry, f"task {task} stopped but it was not running")

    def record(self, entry: Entry) -> None:
        p = entry.payload
        liid, category, task_id = p["liid"], p["category"], p["task_id"]
        what = f"{category} record {p['sequence']} for LIID {liid}"
        if task_id is not None:
            task = self.tasks.get(task_id)
            if task is None:
                self.flag(entry, f"{what} delivered under task {task_id}, which is not running")
                return
            if task.liid != liid:
                self.flag(entry, f"{what} delivered under task {task_id} of LIID {task.liid}")
            if category not in task.categories:
                self.flag(
                    entry,
                    f"{what} delivered, but task {task_id} collects only "
                    + "+".join(task.categories),
                )
            if task.case != p["case_reference"]:
                self.flag(
                    entry,
                    f"{what} is attributed to case {p['case_reference']}, "
                    f"its task to case {task.case}",
                )
            return
        # Without a task (CC exported by an enterprise archive): a live authorisation
        # with this LIID must allow the category.
        live = [a for a in self.authorisations.values() if a.liid == liid and not a.cancelled]
        if not live:
            self.flag(entry, f"{what} delivered with no accepted, uncancelled warrant for it")
            return
        if all(a.categories is not None and category not in a.categories for a in live):
            self.flag(entry, f"{what} delivered, but the warrant does not allow {category}")
        if all(a.case != p["case_reference"] for a in live):
            self.flag(
                entry,
                f"{what} is attributed to case {p['case_reference']}, "
                f"the warrant to case {live[0].case}",
            )

    def finish(self) -> None:
        for task_id, task in sorted(self.tasks.items()):
            auth = self.authorisations.get(task.authorisation_id)
            if auth is not None and auth.cancelled:
                self.anomalies.append(
                    f"task {task_id}: still running at the end of the log although its "
                    "authorisation was cancelled"
                )


def transparency_report(
    entries: Iterable[Entry],
    *,
    origin: str | None = None,
    unreadable: Sequence[int] = (),
    checkpoints: int = 0,
    latest_checkpoint: Checkpoint | None = None,
) -> dict[str, Any]:
    """Counts for oversight, from the entries in log order. Deterministic: equal logs give
    equal reports (sorted keys and lists; no clock, no floats).

    It reads the log; it does not check it (``verify`` does). ``unreadable`` lists the
    indices of entries whose content could not be read; they are not counted.
    """
    totals_warrants = _warrant_counts()
    totals_categories = _category_counts()
    tasks: dict[str, Any] = {"started": 0, "stopped": 0, "running_at_end": 0, "stop_reasons": {}}
    records = _record_counts()
    oversight: dict[str, Any] = {"events": 0, "by_event": {}}
    cases: dict[str, dict[str, Any]] = {}
    unidentified = _warrant_counts()
    scope = _Scope()
    running: dict[str, str] = {}  # task id -> case
    count = 0
    first: int | None = None
    last: int | None = None

    def case_of(name: str) -> dict[str, Any]:
        return cases.setdefault(name, _new_case())

    def count_warrant(counts: dict[str, Any], p: Mapping[str, Any]) -> None:
        counts["decisions"] += 1
        if p["accepted"]:
            counts["accepted"] += 1
            _bump(counts["by_action"], p["action"])
        else:
            counts["refused"] += 1
            _bump(counts["by_reason"], p["reason"])

    for entry in entries:
        count += 1
        first = entry.time_ms if first is None else min(first, entry.time_ms)
        last = entry.time_ms if last is None else max(last, entry.time_ms)
        p = entry.payload
        if entry.type == WARRANT_DECISION:
            verdict = "accepted" if p["accepted"] else "refused"
            count_warrant(totals_warrants, p)
            cats = p.get("categories") or ["unknown"]
            for c in cats:
                totals_categories[c][verdict] += 1
            if p["case_reference"] is None:
                count_warrant(unidentified, p)
            else:
                case = case_of(p["case_reference"])
                count_warrant(case["warrants"], p)
                for c in cats:
                    case["categories"][c][verdict] += 1
                if p["authorisation_id"] is not None:
                    case["authorisations"].add(p["authorisation_id"])
                if p["liid"] is not None:
                    case["liids"].add(p["liid"])
                if p.get("targets") is not None and p["action"] != "cancel":
                    # Targets a refused warrant named (a wildcard, an unknown user) are
                    # listed apart: oversight should see what was asked for, too.
                    key = "targets" if p["accepted"] else "targets_refused"
                    case[key].update(_target_text(t) for t in p["targets"])
            scope.decision(entry)
        elif entry.type == TASK_START:
            tasks["started"] += 1
            case = case_of(p["case_reference"])
            case["tasks"]["started"] += 1
            case["liids"].add(p["liid"])
            case["authorisations"].add(p["authorisation_id"])
            case["targets"].update(_target_text(t) for t in p["targets"])
            running[p["task_id"]] = p["case_reference"]
            scope.task_start(entry)
        elif entry.type == TASK_STOP:
            tasks["stopped"] += 1
            _bump(tasks["stop_reasons"], p["reason"])
            case_of(p["case_reference"])["tasks"]["stopped"] += 1
            running.pop(p["task_id"], None)
            scope.task_stop(entry)
        elif entry.type == RECORD_DELIVERED:
            rec = case_of(p["case_reference"])["records"]
            for counts in (records, rec):
                counts[p["category"]] += 1
                if p["category"] == "CC":
                    counts["cc_with_plaintext" if p["plaintext"] else "cc_ciphertext_only"] += 1
            case_of(p["case_reference"])["liids"].add(p["liid"])
            scope.record(entry)
        elif entry.type == OVERSIGHT:
            oversight["events"] += 1
            _bump(oversight["by_event"], p["event"])
    scope.finish()

    tasks["running_at_end"] = len(running)
    for case_name in running.values():
        cases[case_name]["tasks"]["running_at_end"] += 1

    def finish_case(case: dict[str, Any]) -> dict[str, Any]:
        return {
            **case,
            "authorisations": sorted(case["authorisations"]),
            "liids": sorted(case["liids"]),
            "targets": sorted(case["targets"]),
            "targets_refused": sorted(case["targets_refused"] - case["targets"]),
        }

    return {
        "format": REPORT_FORMAT,
        "ledger": {
            "origin": origin,
            "entries": count + len(unreadable),
            "unreadable_entries": sorted(unreadable),
            "first_time_ms": first,
            "last_time_ms": last,
            "checkpoints": checkpoints,
            "latest_checkpoint": None
            if latest_checkpoint is None
            else {"size": latest_checkpoint.size, "root": _b64(latest_checkpoint.root)},
        },
        "warrants": {
            **totals_warrants,
            "categories": totals_categories,
            "unidentified": unidentified,
        },
        "tasks": tasks,
        "records": records,
        "oversight": oversight,
        "cases": {name: finish_case(case) for name, case in sorted(cases.items())},
        "anomalies": scope.anomalies,
    }


# -- text rendering ----------------------------------------------------------------------


def _safe(value: object) -> str:
    # Case references and reasons are validated tokens, but a message or detail could
    # carry anything; never let a log entry draw on the reader's terminal.
    text = str(value)
    return "".join(ch if ch.isprintable() else f"\\x{ord(ch):02x}" for ch in text)


def _iso(ms: int | None) -> str:
    if ms is None:
        return "-"
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def _tally(counts: Mapping[str, int]) -> str:
    return ", ".join(f"{_safe(k)} {v}" for k, v in sorted(counts.items())) or "none"


def _plural(n: int, word: str, plural: str | None = None) -> str:
    return f"{n} {word if n == 1 else (plural or word + 's')}"


def _encryption_line(rec: Mapping[str, int]) -> str:
    cc = rec["CC"]
    if not cc:
        return "no CC records delivered"
    unreadable = rec["cc_ciphertext_only"]
    share = (unreadable * 100 + cc // 2) // cc  # integer rounding: no floats in reports
    return (
        f"of {_plural(cc, 'CC record')}, {rec['cc_with_plaintext']} carried readable content "
        f"and {unreadable} were ciphertext nobody in the chain could read "
        f"(encryption prevented plaintext in {share}%)"
    )


def _category_line(cats: Mapping[str, Mapping[str, int]]) -> str:
    parts = []
    for name in (*CATEGORIES, "unknown"):
        c = cats[name]
        if c["accepted"] or c["refused"] or name != "unknown":
            parts.append(f"{name} {c['accepted']} accepted / {c['refused']} refused")
    return "; ".join(parts)


def render_report(report: Mapping[str, Any]) -> str:
    """The report as text for people; every number comes from ``report``."""
    led, w, tasks, rec = report["ledger"], report["warrants"], report["tasks"], report["records"]
    lines = [f"Transparency report: {_safe(led['origin'] or 'audit ledger')}"]
    span = f"{_iso(led['first_time_ms'])} .. {_iso(led['last_time_ms'])}"
    lines.append(f"  ledger: {_plural(led['entries'], 'entry', 'entries')} ({span})")
    cp = led["latest_checkpoint"]
    if cp is None:
        lines.append("  checkpoints: none")
    else:
        lines.append(
            f"  checkpoints: {led['checkpoints']}, latest at size {cp['size']} "
            f"(root {base64.b64decode(cp['root'])[:6].hex()}…)"
        )
    if led["unreadable_entries"]:
        lines.append(
            "  UNREADABLE entries (not counted): "
            + ", ".join(str(i) for i in led["unreadable_entries"])
        )
    lines.append("  This report reads the ledger; `doormat ledger verify` checks it.")
    lines.append("")
    lines.append(
        f"Warrants: {_plural(w['decisions'], 'decision')}, {w['accepted']} accepted "
        f"({_tally(w['by_action'])}), {w['refused']} refused"
    )
    if w["refused"]:
        lines.append(f"  refused because: {_tally(w['by_reason'])}")
    lines.append(f"  by category: {_category_line(w['categories'])}")
    if w["unidentified"]["decisions"]:
        lines.append(
            f"  unreadable warrants (no case): {w['unidentified']['refused']} refused "
            f"({_tally(w['unidentified']['by_reason'])})"
        )
    lines.append(
        f"Tasks: {tasks['started']} started, {tasks['stopped']} stopped "
        f"({_tally(tasks['stop_reasons'])}), {tasks['running_at_end']} running at the end"
    )
    lines.append(f"Records delivered: IRI {rec['IRI']}, CC {rec['CC']}")
    lines.append(f"Encryption: {_encryption_line(rec)}")
    ov = report["oversight"]
    lines.append(f"Oversight events: {ov['events']} ({_tally(ov['by_event'])})")
    for name, case in report["cases"].items():
        cw = case["warrants"]
        lines.append("")
        lines.append(f"Case {_safe(name)}  (LIID {', '.join(map(_safe, case['liids'])) or '-'})")
        lines.append(
            f"  warrants: {cw['accepted']} accepted ({_tally(cw['by_action'])}), "
            f"{cw['refused']} refused" + (f" ({_tally(cw['by_reason'])})" if cw["refused"] else "")
        )
        lines.append(f"  categories: {_category_line(case['categories'])}")
        lines.append(f"  targets: {', '.join(map(_safe, case['targets'])) or '-'}")
        if case["targets_refused"]:
            lines.append(
                "  named only in refused warrants: "
                + ", ".join(map(_safe, case["targets_refused"]))
            )
        t = case["tasks"]
        lines.append(
            f"  tasks: {t['started']} started, {t['stopped']} stopped, "
            f"{t['running_at_end']} running at the end"
        )
        r = case["records"]
        lines.append(f"  records: IRI {r['IRI']}, CC {r['CC']}; {_encryption_line(r)}")
    lines.append("")
    if report["anomalies"]:
        lines.append(f"Anomalies ({len(report['anomalies'])}):")
        lines.extend(f"  {_safe(a)}" for a in report["anomalies"])
    else:
        lines.append("Anomalies: none (every task and record follows a logged, accepted warrant)")
    return "\n".join(lines) + "\n"


__all__ = [
    "DEFAULT_ORIGIN",
    "ENTRY_TYPES",
    "FORMAT",
    "MAX_ENTRY_BYTES",
    "OVERSIGHT",
    "RECORD_DELIVERED",
    "TASK_START",
    "TASK_STOP",
    "WARRANT_DECISION",
    "ConsistencyProof",
    "Entry",
    "EntryError",
    "InclusionProof",
    "LedgerCore",
    "LedgerError",
    "LogVerifier",
    "PreparedEntry",
    "Problem",
    "Receipt",
    "VerifyReport",
    "check_payload",
    "make_entry",
    "oversight_entry",
    "parse_entry",
    "peek_checkpoint",
    "record_delivered_entry",
    "render_report",
    "task_start_entry",
    "task_stop_entry",
    "transparency_report",
    "warrant_decision_entry",
]
