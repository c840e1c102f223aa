"""The audit ledger's entries, sans I/O: their schema, validation and canonical bytes,
and the builders for what the interceptor and the oversight body log.

The interceptor logs *before* it acts: every warrant decision (accepted or refused),
every task start and stop, every record delivered to the agency, and the oversight
body's own events. Each entry is one JSON object in its canonical bytes
(``wire.canonical``)::

    {"index": 17, "payload": {...}, "time_ms": 1764400000123, "type": "task-start", "v": 1}

and is one leaf of the log's Merkle tree (``interceptor.ledger.log``). This module reads
no clock: the caller passes ``time_ms``. docs/ledger.md describes the entry types field
by field.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from interceptor.ledger.errors import EntryError
from wire.canonical import CanonicalError, canonical_bytes
from wire.ids import DEVICE_RE, USER_RE
from wire.li.checks import Decision
from wire.li.errors import StateError
from wire.li.trust import FINGERPRINT_RE, TOKEN_RE, exact_fields, load_json
from wire.li.warrant import CASE_REFERENCE_RE, CATEGORIES, LIID_RE, TARGET_FORMATS, Warrant
from wire.merkle import hash_leaf

#: The ``v`` of every entry.
ENTRY_VERSION = 1
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

_TASK_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$")
_UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
# Who handed the record over: "relay", "enterprise:acme", "archive:acme".
_SOURCE_RE = re.compile(r"^[a-z0-9][a-z0-9_.:@-]{0,63}$")
# An oversight actor is a person's or body's name, shown to people.
_ACTOR_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 ._'():@/-]{0,127}$")
_MAX_TEXT = 4096
_MAX_TARGETS = 1000
_MAX_TARGET_CHARS = 256


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


__all__ = [
    "ENTRY_TYPES",
    "ENTRY_VERSION",
    "MAX_ENTRY_BYTES",
    "MAX_TIME_MS",
    "OVERSIGHT",
    "RECORD_DELIVERED",
    "TASK_START",
    "TASK_STOP",
    "WARRANT_DECISION",
    "Entry",
    "check_payload",
    "make_entry",
    "oversight_entry",
    "parse_entry",
    "record_delivered_entry",
    "task_start_entry",
    "task_stop_entry",
    "warrant_decision_entry",
]
