"""The warrant: its format, its strict parser, its canonical bytes and what approvers sign.

Sans-I/O: no files, no network, no clock. Bytes in, a :class:`Warrant` (or a
``WarrantError`` saying what is wrong) out; a Warrant built in code encodes to the same
canonical bytes the parser reads back.

A warrant is an ETSI TS 103 120-flavoured authorisation in JSON (docs/warrants.md has
the field-by-field mapping to TS 103 120 / TS 103 221)::

    {"v": 1,
     "authorisation_id": "0b7c...-uuid", "case_reference": "OP-ANCHOR-7", "generation": 1,
     "legal_type": "lawful-interception", "jurisdiction": "XX", "csp_id": "doormat",
     "status": "active",
     "targets": [{"format": "device", "value": "alice@acme.phone"},
                 {"format": "user", "value": "bob@acme"}],
     "categories": ["IRI", "CC"], "not_before": 1764400000, "not_after": 1764486400,
     "liid": "XX-3F2A...", "delivery": {"agency_id": "agency", "key_fingerprint": "<hex>"},
     "approvals": [{"type": "executive", "approver": "Secretary of State",
                    "timestamp": 1764400100, "signature": "<base64>"}, ...]}

Signatures. The *body* is the warrant without ``approvals``. Both approvers sign the same
body; each signature also covers its own approval's ``type``, ``approver`` and
``timestamp`` (otherwise those three fields could be altered without detection)::

    message = canonical_bytes({"context": "doormat-warrant-approval/1",
                               "approval": {"type": ..., "approver": ..., "timestamp": ...},
                               "warrant": <body>})

Neither approval covers the other, so the two can be added in either order.

The checks that decide whether to act on a warrant are ``wire.li.checks``.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from wire.b64 import b64encode
from wire.canonical import canonical_bytes
from wire.li.errors import WarrantError
from wire.li.trust import (
    FINGERPRINT_RE,
    NAME_RE,
    ROLES,
    TOKEN_RE,
    exact_fields,
    key_bytes,
    load_json,
)

VERSION = 1
MAX_WARRANT_BYTES = 64 * 1024
SIGNING_CONTEXT = "doormat-warrant-approval/1"
SIGNATURE_BYTES = 64

CATEGORIES = ("IRI", "CC")
TARGET_FORMATS = ("device", "user")
STATUSES = ("active", "cancelled")
APPROVAL_TYPES = ROLES  # ("executive", "judicial"): one of each is required
DEFAULT_LEGAL_TYPE = "lawful-interception"

# Structural bounds (policy sets the real target cap; these only bound parsing work).
MAX_TARGETS_PARSED = 1000
MAX_APPROVALS_PARSED = 16
MAX_TARGET_CHARS = 256
MAX_TIME = 2**53 - 1  # seconds; JSON integers beyond this are not portable

_FIELDS = (
    "v",
    "authorisation_id",
    "case_reference",
    "generation",
    "legal_type",
    "jurisdiction",
    "csp_id",
    "status",
    "targets",
    "categories",
    "not_before",
    "not_after",
    "liid",
    "delivery",
    "approvals",
)
CASE_REFERENCE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 ._/:-]{0,63}$")
LEGAL_TYPE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 ._-]{0,63}$")
JURISDICTION_RE = re.compile(r"^[A-Z]{2}$")  # ISO 3166-1 alpha-2
# TS 102 232-1 LIID: at most 25 octets. Ours: letters, digits, '.', '_', '-'.
LIID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,24}$")
# Anything that makes a target a pattern rather than one exact identity.
_WILDCARD_CHARS = frozenset("*+#%?[]{}()|^$\\!~<>")
_WILDCARD_WORDS = frozenset({"all", "any", "every", "everyone", "everybody", "*", "none"})


class Reason(StrEnum):
    """Stable reason codes. ``ACCEPTED`` is the reason of an accepted decision."""

    ACCEPTED = "accepted"
    # structure (the parser)
    TOO_LARGE = "too-large"
    MALFORMED = "malformed"
    # targets
    TOO_MANY_TARGETS = "too-many-targets"
    WILDCARD_TARGET = "wildcard-target"
    INVALID_TARGET = "invalid-target"
    # policy
    WRONG_JURISDICTION = "wrong-jurisdiction"
    WRONG_CSP = "wrong-csp"
    WRONG_DELIVERY_KEY = "wrong-delivery-key"
    # time
    WINDOW_TOO_LONG = "window-too-long"
    NOT_YET_VALID = "not-yet-valid"
    EXPIRED = "expired"
    RETROSPECTIVE_WINDOW = "retrospective-window"
    # approvals
    UNKNOWN_APPROVER = "unknown-approver"
    ROLE_MISMATCH = "role-mismatch"
    SAME_APPROVER_TWICE = "same-approver-twice"
    SAME_ROLE_TWICE = "same-role-twice"
    MISSING_APPROVAL = "missing-approval"
    BAD_SIGNATURE = "bad-signature"
    APPROVAL_IN_FUTURE = "approval-in-future"
    APPROVAL_TOO_OLD = "approval-too-old"
    # state
    REPLAYED_ID = "replayed-id"
    STALE_GENERATION = "stale-generation"
    ALREADY_CANCELLED = "already-cancelled"
    # directory
    UNKNOWN_TARGET = "unknown-target"
    DIRECTORY_UNAVAILABLE = "directory-unavailable"


# ---------------------------------------------------------------------------- the warrant


@dataclass(frozen=True)
class Target:
    """TS 103 120 TargetIdentifierValue: FormatType (``device``/``user``) and Value."""

    format: str
    value: str

    def to_json(self) -> dict[str, Any]:
        return {"format": self.format, "value": self.value}

    def __str__(self) -> str:
        return f"{self.format}:{self.value}"


@dataclass(frozen=True)
class Delivery:
    """Where records go: the agency, and the fingerprint of the key they are encrypted to."""

    agency_id: str
    key_fingerprint: str

    def to_json(self) -> dict[str, Any]:
        return {"agency_id": self.agency_id, "key_fingerprint": self.key_fingerprint}


@dataclass(frozen=True)
class Approval:
    """One approver's signed approval (TS 103 120 AuthorisationApprovalDetails)."""

    type: str  # "executive" | "judicial"
    approver: str  # the approver's name in the trust store
    timestamp: int  # seconds since the epoch
    signature: bytes  # Ed25519, 64 bytes, over approval_message(...)

    def header(self) -> dict[str, Any]:
        return {"type": self.type, "approver": self.approver, "timestamp": self.timestamp}

    def to_json(self) -> dict[str, Any]:
        return {**self.header(), "signature": b64encode(self.signature)}


@dataclass(frozen=True)
class Warrant:
    authorisation_id: str
    case_reference: str
    generation: int
    legal_type: str
    jurisdiction: str
    csp_id: str
    status: str
    targets: tuple[Target, ...]
    categories: tuple[str, ...]
    not_before: int
    not_after: int
    liid: str
    delivery: Delivery
    approvals: tuple[Approval, ...] = ()

    def body(self) -> dict[str, Any]:
        """The warrant without its approvals: what every approver signs."""
        return {
            "v": VERSION,
            "authorisation_id": self.authorisation_id,
            "case_reference": self.case_reference,
            "generation": self.generation,
            "legal_type": self.legal_type,
            "jurisdiction": self.jurisdiction,
            "csp_id": self.csp_id,
            "status": self.status,
            "targets": [t.to_json() for t in self.targets],
            "categories": list(self.categories),
            "not_before": self.not_before,
            "not_after": self.not_after,
            "liid": self.liid,
            "delivery": self.delivery.to_json(),
        }

    def to_json(self) -> dict[str, Any]:
        return {**self.body(), "approvals": [a.to_json() for a in self.approvals]}

    def encode(self) -> bytes:
        """Canonical bytes of the whole warrant, approvals included."""
        return canonical_bytes(self.to_json())

    @property
    def digest(self) -> str:
        """Hex SHA-256 of ``encode()``: names this exact document in logs."""
        return hashlib.sha256(self.encode()).hexdigest()

    @property
    def window_seconds(self) -> int:
        return self.not_after - self.not_before

    def approval_message(self, type: str, approver: str, timestamp: int) -> bytes:
        """The bytes an approver of this warrant signs (see the module docstring)."""
        return canonical_bytes(
            {
                "context": SIGNING_CONTEXT,
                "approval": {"type": type, "approver": approver, "timestamp": timestamp},
                "warrant": self.body(),
            }
        )


# ----------------------------------------------------------------------------- the parser


class _Malformed(WarrantError):
    """A WarrantError with code ``malformed`` (the shared JSON helpers raise it)."""

    def __init__(self, message: str) -> None:
        super().__init__(Reason.MALFORMED.value, message)


def _malformed(message: str) -> WarrantError:
    return _Malformed(message)


def iso(t: int) -> str:
    """``1764400000`` -> ``2025-11-29T07:06:40Z`` (the integer itself if out of range)."""
    try:
        return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    except (OverflowError, ValueError, OSError):
        return str(t)


def is_wildcard(value: str) -> bool:
    """True for anything that is not one exact identity: empty, ``*``, ``+``, ``#``,
    ``%``, ``all`` and friends, any pattern or regex character, whitespace, or a
    whole-domain form like ``@acme``."""
    stripped = value.strip()
    if not stripped or stripped != value:
        return True
    if value.lower() in _WILDCARD_WORDS or value.startswith("@") or value.endswith("@"):
        return True
    return any(c in _WILDCARD_CHARS or c.isspace() for c in value)


def _string(obj: Mapping[str, Any], name: str, pattern: re.Pattern[str], hint: str) -> str:
    value = obj[name]
    if not isinstance(value, str):
        raise _malformed(f"field {name!r} must be a string")
    if not pattern.fullmatch(value):
        raise _malformed(f"field {name!r} is not {hint}: {value[:80]!r}")
    return value


def _integer(obj: Mapping[str, Any], name: str, low: int, high: int = MAX_TIME) -> int:
    value = obj[name]
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise _malformed(f"field {name!r} must be an integer from {low} to {high}")
    return value


def _list(obj: Mapping[str, Any], name: str, low: int, high: int) -> list[Any]:
    value = obj[name]
    if not isinstance(value, list):
        raise _malformed(f"field {name!r} must be a list")
    if not low <= len(value) <= high:
        raise _malformed(f"field {name!r} must have {low} to {high} entries, has {len(value)}")
    return value


def _uuid(obj: Mapping[str, Any], name: str) -> str:
    value = obj[name]
    if not isinstance(value, str) or len(value) != 36:
        raise _malformed(f"field {name!r} must be a UUID (8-4-4-4-12 lower-case hex)")
    try:
        canonical = str(uuid.UUID(value))
    except ValueError:
        canonical = ""
    if canonical != value:
        raise _malformed(f"field {name!r} must be a UUID (8-4-4-4-12 lower-case hex)")
    return value


def warrant_from_json(obj: object) -> Warrant:
    """Validate a decoded JSON value as a warrant. Raises WarrantError (``malformed``)."""
    top = exact_fields(obj, "warrant", _FIELDS, _Malformed)
    if top["v"] != VERSION or isinstance(top["v"], bool):
        raise _malformed(f"unsupported warrant version {top['v']!r} (expected {VERSION})")

    targets = []
    seen_targets: set[tuple[str, str]] = set()
    for i, entry in enumerate(_list(top, "targets", 1, MAX_TARGETS_PARSED)):
        t = exact_fields(entry, f"target #{i + 1}", ("format", "value"), _Malformed)
        if t["format"] not in TARGET_FORMATS:
            raise _malformed(
                f"target #{i + 1}: 'format' must be one of {', '.join(TARGET_FORMATS)}"
            )
        value = t["value"]
        # The value is judged by check_warrant (wildcards and ids get their own reasons);
        # here it only has to be a bounded string.
        if not isinstance(value, str) or len(value) > MAX_TARGET_CHARS:
            raise _malformed(
                f"target #{i + 1}: 'value' must be a string of at most "
                f"{MAX_TARGET_CHARS} characters"
            )
        if (t["format"], value) in seen_targets:
            raise _malformed(f"target #{i + 1} repeats {t['format']}:{value!r}")
        seen_targets.add((t["format"], value))
        targets.append(Target(format=t["format"], value=value))

    categories = _list(top, "categories", 1, len(CATEGORIES))
    for c in categories:
        if c not in CATEGORIES:
            raise _malformed(f"field 'categories' may hold only {' and '.join(CATEGORIES)}")
    if len(set(categories)) != len(categories):
        raise _malformed("field 'categories' repeats a category")

    delivery = exact_fields(
        top["delivery"], "field 'delivery'", ("agency_id", "key_fingerprint"), _Malformed
    )
    agency_id = _string(delivery, "agency_id", TOKEN_RE, "an agency id")
    fingerprint = _string(
        delivery, "key_fingerprint", FINGERPRINT_RE, "64 lower-case hex digits (SHA-256)"
    )

    approvals = []
    for i, entry in enumerate(_list(top, "approvals", 0, MAX_APPROVALS_PARSED)):
        where = f"approval #{i + 1}"
        a = exact_fields(entry, where, ("type", "approver", "timestamp", "signature"), _Malformed)
        if a["type"] not in APPROVAL_TYPES:
            raise _malformed(f"{where}: 'type' must be one of {', '.join(APPROVAL_TYPES)}")
        approver = a["approver"]
        if not isinstance(approver, str) or not NAME_RE.fullmatch(approver):
            raise _malformed(f"{where}: 'approver' is not a valid approver name")
        ts = a["timestamp"]
        if not isinstance(ts, int) or isinstance(ts, bool) or not 0 <= ts <= MAX_TIME:
            raise _malformed(f"{where}: 'timestamp' must be an integer (seconds)")
        signature = key_bytes(
            a["signature"], f"{where}: 'signature'", _Malformed, SIGNATURE_BYTES
        )
        approvals.append(
            Approval(type=a["type"], approver=approver, timestamp=ts, signature=signature)
        )

    status = top["status"]
    if status not in STATUSES:
        raise _malformed(f"field 'status' must be one of {', '.join(STATUSES)}")
    not_before = _integer(top, "not_before", 0)
    not_after = _integer(top, "not_after", 0)
    if not_after <= not_before:
        raise _malformed("field 'not_after' must be later than 'not_before'")

    return Warrant(
        authorisation_id=_uuid(top, "authorisation_id"),
        case_reference=_string(top, "case_reference", CASE_REFERENCE_RE, "a case reference"),
        generation=_integer(top, "generation", 1),
        legal_type=_string(top, "legal_type", LEGAL_TYPE_RE, "a legal type"),
        jurisdiction=_string(
            top, "jurisdiction", JURISDICTION_RE, "a two-letter upper-case country code"
        ),
        csp_id=_string(top, "csp_id", TOKEN_RE, "a CSP id"),
        status=status,
        targets=tuple(targets),
        categories=tuple(categories),
        not_before=not_before,
        not_after=not_after,
        liid=_string(top, "liid", LIID_RE, "a LIID (1-25 letters, digits, '.', '_', '-')"),
        delivery=Delivery(agency_id=agency_id, key_fingerprint=fingerprint),
        approvals=tuple(approvals),
    )


def parse_warrant(data: bytes, *, max_bytes: int = MAX_WARRANT_BYTES) -> Warrant:
    """Parse outside bytes into a Warrant, or raise WarrantError saying what is wrong.

    ``code`` on the error is ``too-large`` (over ``max_bytes``) or ``malformed`` (not
    UTF-8, not JSON, duplicate keys, a missing or unknown field, a wrong type or shape).
    """
    if not isinstance(data, bytes | bytearray | memoryview):
        raise _malformed("a warrant must be given as bytes")
    if len(data) > max_bytes:
        raise WarrantError(
            Reason.TOO_LARGE.value,
            f"warrant exceeds the {max_bytes}-byte limit (got {len(data)} bytes)",
        )
    return warrant_from_json(load_json(bytes(data), "warrant", _Malformed, max_bytes))


def derive_liid(jurisdiction: str, authorisation_id: str) -> str:
    """A LIID that stays the same across generations of one authorisation:
    ``XX-`` and 16 upper-case hex digits of SHA-256(authorisation id)."""
    digest = hashlib.sha256(authorisation_id.encode("ascii")).hexdigest()[:16].upper()
    return f"{jurisdiction}-{digest}"


__all__ = [
    "APPROVAL_TYPES",
    "CASE_REFERENCE_RE",
    "CATEGORIES",
    "DEFAULT_LEGAL_TYPE",
    "JURISDICTION_RE",
    "LIID_RE",
    "MAX_WARRANT_BYTES",
    "SIGNING_CONTEXT",
    "STATUSES",
    "TARGET_FORMATS",
    "Approval",
    "Delivery",
    "Reason",
    "Target",
    "Warrant",
    "derive_liid",
    "is_wildcard",
    "iso",
    "parse_warrant",
    "warrant_from_json",
]
