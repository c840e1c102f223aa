"""Key transparency, the contract between the relay and the devices, sans I/O.

The key directory is an append-only Merkle log (``wire.merkle``: RFC 6962 hashing,
RFC 9162 proofs; docs/key-transparency.md). The relay writes it (``relay.kt``); every
device checks it (``clients.kt``). What both sides must agree on lives here:

* ``KT_ORIGIN``: the log's origin, and the name of the relay's checkpoint signing key;
* the **entry encoding**: one entry per change that binds a device to a key, in
  canonical JSON (``wire.canonical``), the leaf's data::

      {"device": "alice@acme.phone", "identity": "<b64, as published>",
       "op": "add", "t": 1764400000000, "user": "alice@acme"}

  ``entry_bytes`` writes it (the relay when it logs, a device when it re-hashes a leaf
  to check a proof), so the two cannot drift apart;
* the **``kt`` object** of a directory answer: the signed checkpoint, for every device
  listed its entry and an inclusion proof, and with ``since`` a consistency proof::

      {"checkpoint": "<signed note>",
       "entries": [{"index": 3, "entry": {...}, "proof": ["<b64 hash>", ...]}, ...],
       "since": 2, "consistency": ["<b64 hash>", ...]}

  ``parse_kt`` reads it strictly (exact fields, bounded sizes, strict base64), raising
  ``MalformedKTAnswer``;
* the **errors** a verifier raises and the **results** it returns (``Alarm``,
  ``LookupResult``), which the device reports as events.

Nothing here verifies anything: checking signatures and proofs is the device's job
(``clients.kt.DirectoryView``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from wire.b64 import B64Error, b64decode
from wire.canonical import CanonicalError, canonical_bytes
from wire.ids import DEVICE_RE, USER_RE, user_of
from wire.merkle import HASH_SIZE

#: The key directory's log origin; the relay's checkpoint signing key has this name.
KT_ORIGIN = "doormat.example/directory"

Op = Literal["add", "revoke"]
OPS: tuple[str, ...] = ("add", "revoke")
#: Bound on one answer: entries and proof hashes.
MAX_ENTRIES = 1024
MAX_PROOF = 64


# -- the entry ------------------------------------------------------------------------


def entry_object(user: str, device: str, identity: str, op: str, t: int) -> dict[str, Any]:
    """The log entry as a JSON object. ``op`` must be one of ``OPS``."""
    if op not in OPS:
        raise ValueError(f"op must be one of {OPS}, not {op!r}")
    return {"device": device, "identity": identity, "op": op, "t": t, "user": user}


def entry_bytes(user: str, device: str, identity: str, op: str, t: int) -> bytes:
    """The log entry, in canonical JSON: the leaf's data."""
    return canonical_bytes(entry_object(user, device, identity, op, t))


# -- errors ---------------------------------------------------------------------------


class KTError(Exception):
    """Something in a directory answer could not be verified. Subclasses say what."""


class MalformedKTAnswer(KTError):
    """The ``kt`` object (or an entry in it) is not in the expected shape."""


class CheckpointInvalid(KTError):
    """The checkpoint is not signed by the pinned directory key, or not well formed."""


class InconsistentCheckpoint(KTError):
    """The answer's checkpoint contradicts one the device verified: the consistency
    proof from the held checkpoint fails, or a size it saw before comes with another
    root. Both checkpoints are validly signed, so ``alarm`` (a split-view ``Alarm``, also
    recorded in the view) is set."""

    def __init__(self, message: str, alarm: Alarm | None = None) -> None:
        super().__init__(message)
        self.alarm = alarm


class StaleCheckpoint(KTError):
    """The answer cannot be checked against the checkpoint held now: it is older than
    that one and not one seen before, or newer but without a consistency proof *from the
    held size* (the request was sent before the view moved on, or without ``since``).
    Not evidence of anything: ask again with ``since=view.since``."""


class UnprovenDevice(KTError):
    """A listed device without a valid log entry and inclusion proof: it is not used."""

    def __init__(self, device: str, reason: str) -> None:
        super().__init__(f"{device}: {reason}")
        self.device = device
        self.reason = reason


class IdentityMismatch(UnprovenDevice):
    """The bundle's identity key differs from the key the log binds the device to."""


# -- results --------------------------------------------------------------------------


@dataclass(frozen=True)
class LogEntry:
    """One directory log entry, as the relay logged it."""

    user: str
    device: str
    identity: str
    op: str  # add | revoke
    t: int

    def data(self) -> bytes:
        """The leaf's data: the entry in canonical JSON (``entry_bytes``)."""
        return entry_bytes(self.user, self.device, self.identity, self.op, self.t)


@dataclass(frozen=True)
class Alarm:
    """A key-transparency alarm. ``time`` is the logged entry's time for device alarms
    (when the directory added it) and the detection time for a split view."""

    user: str | None
    device: str | None
    time: int
    reason: str
    kind: str  # "unenrolled-device" | "key-mismatch" | "split-view"
    index: int | None = None  # the log entry, for device alarms
    evidence: tuple[str, ...] = ()  # the two checkpoint notes, for a split view

    def to_json(self) -> dict[str, Any]:
        return {
            "user": self.user,
            "device": self.device,
            "time": self.time,
            "reason": self.reason,
            "kind": self.kind,
            "index": self.index,
            "evidence": list(self.evidence),
        }


@dataclass(frozen=True)
class LookupResult:
    """What ``verify_lookup`` found: the listed devices it proved, in listed order, as
    ``(device, identity)`` pairs, and the ones it refused, each with its reason."""

    verified: list[tuple[str, str]]
    refused: list[UnprovenDevice] = field(default_factory=list)
    size: int = 0  # the checkpoint size the answer was verified against

    @property
    def devices(self) -> list[str]:
        return [device for device, _ in self.verified]

    def raise_for_refused(self) -> None:
        if self.refused:
            raise self.refused[0]


# -- parsing (strict) -----------------------------------------------------------------


def _int(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**63:
        raise MalformedKTAnswer(f"{what} must be a non-negative integer")
    return value


def text_field(value: Any, what: str, limit: int = 2048) -> str:
    """A non-empty string of at most ``limit`` characters, or MalformedKTAnswer."""
    if not isinstance(value, str) or not value or len(value) > limit:
        raise MalformedKTAnswer(f"{what} must be a non-empty string")
    return value


def _hashes(value: Any, what: str) -> list[bytes]:
    if not isinstance(value, list) or len(value) > MAX_PROOF:
        raise MalformedKTAnswer(f"{what} must be a list of at most {MAX_PROOF} base64 hashes")
    out = []
    for i, item in enumerate(value):
        try:
            out.append(b64decode(item, f"{what}[{i}]", length=HASH_SIZE))
        except B64Error as exc:
            raise MalformedKTAnswer(str(exc)) from None
    return out


def parse_entry(value: Any) -> LogEntry:
    """A log entry object, strictly: exactly its five fields, each of the right type."""
    if not isinstance(value, dict) or set(value) != {"device", "identity", "op", "t", "user"}:
        raise MalformedKTAnswer("an entry must be exactly {device, identity, op, t, user}")
    user = text_field(value["user"], "entry.user", 200)
    device = text_field(value["device"], "entry.device", 200)
    if not USER_RE.fullmatch(user) or not DEVICE_RE.fullmatch(device):
        raise MalformedKTAnswer(f"entry names no valid user and device: {device!r:.80}")
    if user_of(device) != user:
        raise MalformedKTAnswer(f"entry's device {device} is not a device of {user}")
    op = value["op"]
    if op not in OPS:
        raise MalformedKTAnswer(f"entry op must be add or revoke, not {op!r:.40}")
    identity = text_field(value["identity"], "entry.identity")
    entry = LogEntry(user, device, identity, op, _int(value["t"], "entry.t"))
    try:
        entry.data()
    except CanonicalError as exc:  # pragma: no cover - the fields above are all encodable
        raise MalformedKTAnswer(f"entry cannot be encoded: {exc}") from None
    return entry


@dataclass(frozen=True)
class ParsedKT:
    """A ``kt`` object, parsed: the checkpoint note (not yet verified), each entry as
    ``(index, entry, inclusion proof)``, and the consistency proof from ``since``."""

    note: str
    entries: list[tuple[int, LogEntry, list[bytes]]]
    since: int | None
    consistency: list[bytes] | None


def parse_kt(kt: Any) -> ParsedKT:
    """Read a directory answer's ``kt`` object strictly, or raise MalformedKTAnswer."""
    if not isinstance(kt, Mapping):
        raise MalformedKTAnswer("'kt' must be an object")
    unknown = set(kt) - {"checkpoint", "entries", "since", "consistency"}
    if unknown:
        raise MalformedKTAnswer(f"'kt' has unknown field(s): {', '.join(sorted(unknown))[:100]}")
    note = text_field(kt.get("checkpoint"), "kt.checkpoint", 64 * 1024)
    raw_entries = kt.get("entries", [])
    if not isinstance(raw_entries, list) or len(raw_entries) > MAX_ENTRIES:
        raise MalformedKTAnswer(f"kt.entries must be a list of at most {MAX_ENTRIES} entries")
    entries = []
    for i, item in enumerate(raw_entries):
        if not isinstance(item, dict) or set(item) != {"index", "entry", "proof"}:
            raise MalformedKTAnswer(f"kt.entries[{i}] must be exactly {{index, entry, proof}}")
        entries.append(
            (
                _int(item["index"], f"kt.entries[{i}].index"),
                parse_entry(item["entry"]),
                _hashes(item["proof"], f"kt.entries[{i}].proof"),
            )
        )
    since = consistency = None
    if kt.get("consistency") is not None:
        consistency = _hashes(kt["consistency"], "kt.consistency")
        since = _int(kt.get("since"), "kt.since")
    return ParsedKT(note, entries, since, consistency)


__all__ = [
    "KT_ORIGIN",
    "MAX_ENTRIES",
    "MAX_PROOF",
    "OPS",
    "Alarm",
    "CheckpointInvalid",
    "IdentityMismatch",
    "InconsistentCheckpoint",
    "KTError",
    "LogEntry",
    "LookupResult",
    "MalformedKTAnswer",
    "Op",
    "ParsedKT",
    "StaleCheckpoint",
    "UnprovenDevice",
    "entry_bytes",
    "entry_object",
    "parse_entry",
    "parse_kt",
    "text_field",
]
