"""The checks that decide whether to act on a warrant: the policy, the state, the decision.

Sans-I/O: no files, no network, no clock. The caller passes the warrant (or its bytes,
``wire.li.warrant`` parses them), the trust store, the policy, the state, ``now`` and a
directory look-up, and gets a :class:`Decision`.

Checks (``check_warrant``) fail closed and in a fixed order: structure; targets;
jurisdiction, CSP and delivery key; the time window; approvals and signatures; the
state (replay, generation, cancellation); and last the directory, so that no
unauthenticated target list ever reaches it. The first failing check gives the
refusal's reason code; acceptance needs every check to pass.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from wire.canonical import canonical_bytes
from wire.ids import DEVICE_RE, USER_RE
from wire.li.errors import StateError, WarrantError
from wire.li.policy import Policy
from wire.li.trust import TrustStore, exact_fields, load_json
from wire.li.warrant import (
    APPROVAL_TYPES,
    MAX_WARRANT_BYTES,
    STATUSES,
    Reason,
    Warrant,
    is_wildcard,
    iso,
    parse_warrant,
    warrant_from_json,
)

ACTIONS = ("activate", "update", "cancel")


# ---------------------------------------------------------------- policy, state, decision


@dataclass(frozen=True)
class Decision:
    """What the interceptor decided about one warrant: a plain, JSON-serialisable record,
    meant to be appended to the audit ledger before anything is acted on.

    ``reason`` is ``accepted`` or a refusal code (see :class:`Reason`); ``action`` is
    ``activate``, ``update`` or ``cancel`` when accepted, ``None`` when refused. The
    other fields identify the warrant as far as it could be read (``None`` for input
    that did not parse); ``digest`` is the hex SHA-256 of the warrant's canonical bytes,
    or of the raw input when it did not parse.
    """

    accepted: bool
    reason: str
    message: str
    checked_at: int
    action: str | None = None
    authorisation_id: str | None = None
    generation: int | None = None
    case_reference: str | None = None
    liid: str | None = None
    not_after: int | None = None
    digest: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "type": "warrant-decision",
            "accepted": self.accepted,
            "reason": self.reason,
            "message": self.message,
            "checked_at": self.checked_at,
            "action": self.action,
            "authorisation_id": self.authorisation_id,
            "generation": self.generation,
            "case_reference": self.case_reference,
            "liid": self.liid,
            "not_after": self.not_after,
            "digest": self.digest,
        }

    def encode(self) -> bytes:
        return canonical_bytes(self.to_json())

    @classmethod
    def from_json(cls, obj: object) -> Decision:
        fields = dict(exact_fields(obj, "decision", _DECISION_FIELDS, StateError))
        if fields.pop("type") != "warrant-decision":
            raise StateError("decision: 'type' must be 'warrant-decision'")
        if not isinstance(fields["accepted"], bool):
            raise StateError("decision: 'accepted' must be true or false")
        if fields["reason"] not in {r.value for r in Reason}:
            raise StateError(f"decision: unknown reason {fields['reason']!r}")
        if fields["accepted"] != (fields["reason"] == Reason.ACCEPTED.value):
            raise StateError("decision: 'accepted' and 'reason' disagree")
        if fields["accepted"] and fields["action"] not in ACTIONS:
            raise StateError("decision: an accepted decision needs an action")
        if not fields["accepted"] and fields["action"] is not None:
            raise StateError("decision: a refused decision has no action")
        for name, kind in (
            ("message", str),
            ("checked_at", int),
            ("authorisation_id", str),
            ("generation", int),
            ("case_reference", str),
            ("liid", str),
            ("not_after", int),
            ("digest", str),
        ):
            value = fields[name]
            optional = name not in ("message", "checked_at")
            if (value is None and optional) or (
                isinstance(value, kind) and not isinstance(value, bool)
            ):
                continue
            raise StateError(f"decision: {name!r} has the wrong type")
        return cls(**fields)

    def __str__(self) -> str:
        if self.accepted:
            return f"accepted: {self.action} — {self.message}"
        return f"refused ({self.reason}): {self.message}"


_DECISION_FIELDS = (
    "type",
    "accepted",
    "reason",
    "message",
    "checked_at",
    "action",
    "authorisation_id",
    "generation",
    "case_reference",
    "liid",
    "not_after",
    "digest",
)


@dataclass(frozen=True)
class AuthorisationRecord:
    """What the state remembers about one accepted authorisation id."""

    generation: int
    status: str  # "active" | "cancelled"
    case_reference: str
    liid: str
    not_after: int
    digest: str

    def to_json(self) -> dict[str, Any]:
        return {
            "generation": self.generation,
            "status": self.status,
            "case_reference": self.case_reference,
            "liid": self.liid,
            "not_after": self.not_after,
            "digest": self.digest,
        }


_STATE_VERSION = 1
_RECORD_FIELDS = ("generation", "status", "case_reference", "liid", "not_after", "digest")


class WarrantState:
    """The accepted authorisation ids and their latest generation and status.

    ``check_warrant`` only reads it. After the decision has been logged, the caller
    calls ``apply(decision)``; replaying the logged decisions in order into an empty
    state rebuilds it, so the audit ledger can be the source of truth after a crash.
    """

    def __init__(self, records: Mapping[str, AuthorisationRecord] | None = None) -> None:
        self._records: dict[str, AuthorisationRecord] = dict(records or {})

    def get(self, authorisation_id: str) -> AuthorisationRecord | None:
        return self._records.get(authorisation_id)

    def __contains__(self, authorisation_id: object) -> bool:
        return authorisation_id in self._records

    def __iter__(self) -> Iterator[str]:
        return iter(self._records)

    def __len__(self) -> int:
        return len(self._records)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, WarrantState) and self._records == other._records

    __hash__ = None  # type: ignore[assignment]

    def active(self, now: int) -> list[str]:
        """Authorisation ids whose latest generation is active and not yet expired."""
        return [
            aid for aid, r in self._records.items() if r.status == "active" and now < r.not_after
        ]

    def apply(self, decision: Decision) -> None:
        """Record an accepted decision. A refused one changes nothing."""
        if not decision.accepted:
            return
        aid, gen = decision.authorisation_id, decision.generation
        if (
            aid is None
            or gen is None
            or decision.action not in ACTIONS
            or decision.case_reference is None
            or decision.liid is None
            or decision.not_after is None
            or decision.digest is None
        ):
            raise StateError("an accepted decision must name the warrant it accepts")
        previous = self._records.get(aid)
        if previous is not None:
            if gen <= previous.generation:
                raise StateError(
                    f"{aid}: generation {gen} is not above the recorded "
                    f"{previous.generation}; was it checked against this state?"
                )
            if previous.status == "cancelled":
                raise StateError(f"{aid} is already cancelled")
        self._records[aid] = AuthorisationRecord(
            generation=gen,
            status="cancelled" if decision.action == "cancel" else "active",
            case_reference=decision.case_reference,
            liid=decision.liid,
            not_after=decision.not_after,
            digest=decision.digest,
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "v": _STATE_VERSION,
            "authorisations": {aid: r.to_json() for aid, r in sorted(self._records.items())},
        }

    def encode(self) -> bytes:
        return canonical_bytes(self.to_json())

    @classmethod
    def from_json(cls, obj: object) -> WarrantState:
        top = exact_fields(obj, "warrant state", ("v", "authorisations"), StateError)
        if top["v"] != _STATE_VERSION or isinstance(top["v"], bool):
            raise StateError(f"warrant state: unsupported version {top['v']!r}")
        entries = top["authorisations"]
        if not isinstance(entries, dict):
            raise StateError("warrant state: 'authorisations' must be an object")
        records = {}
        for aid, entry in entries.items():
            r = exact_fields(entry, f"warrant state {aid!r}", _RECORD_FIELDS, StateError)
            ok = (
                isinstance(r["generation"], int)
                and not isinstance(r["generation"], bool)
                and r["generation"] >= 1
                and r["status"] in STATUSES
                and isinstance(r["case_reference"], str)
                and isinstance(r["liid"], str)
                and isinstance(r["not_after"], int)
                and not isinstance(r["not_after"], bool)
                and isinstance(r["digest"], str)
            )
            if not ok:
                raise StateError(f"warrant state {aid!r}: a field has the wrong type")
            records[aid] = AuthorisationRecord(**r)
        return cls(records)

    @classmethod
    def parse(cls, data: bytes) -> WarrantState:
        return cls.from_json(load_json(data, "warrant state", StateError, 64 * 1024 * 1024))


# ------------------------------------------------------------------------------ the checks

Directory = Callable[[str, str], bool]
"""``directory(format, value)`` is True when that device or user exists."""

_Failure = tuple[Reason, str]


def _check_targets(w: Warrant, policy: Policy) -> _Failure | None:
    if len(w.targets) > policy.max_targets:
        return (
            Reason.TOO_MANY_TARGETS,
            f"the warrant names {len(w.targets)} targets; the limit is {policy.max_targets}",
        )
    for t in w.targets:
        if is_wildcard(t.value):
            return (
                Reason.WILDCARD_TARGET,
                f"target {t.format}:{t.value!r} is not one exact identity; "
                "wildcards, patterns and 'all' are never accepted",
            )
    for t in w.targets:
        pattern = DEVICE_RE if t.format == "device" else USER_RE
        if not pattern.fullmatch(t.value):
            example = "alice@acme.phone" if t.format == "device" else "alice@acme"
            return (
                Reason.INVALID_TARGET,
                f"target {t.format}:{t.value!r} is not a {t.format} id (e.g. {example})",
            )
    return None


def _check_policy(w: Warrant, policy: Policy) -> _Failure | None:
    if w.jurisdiction != policy.jurisdiction:
        return (
            Reason.WRONG_JURISDICTION,
            f"the warrant is issued in jurisdiction {w.jurisdiction}; "
            f"this interceptor serves {policy.jurisdiction}",
        )
    if w.csp_id != policy.csp_id:
        return (
            Reason.WRONG_CSP,
            f"the warrant is addressed to CSP {w.csp_id!r}, not {policy.csp_id!r}",
        )
    if w.delivery.key_fingerprint != policy.agency_key_fingerprint:
        return (
            Reason.WRONG_DELIVERY_KEY,
            f"the warrant delivers to key {w.delivery.key_fingerprint[:16]}..., "
            f"not to the pinned agency key {policy.agency_key_fingerprint[:16]}...",
        )
    return None


def _check_time(w: Warrant, policy: Policy, now: int) -> _Failure | None:
    if w.window_seconds > policy.max_window_seconds:
        return (
            Reason.WINDOW_TOO_LONG,
            f"the window is {w.window_seconds} s; the maximum is {policy.max_window_seconds} s",
        )
    if w.status == "cancelled":
        # Stopping is always safe: a cancellation is not refused for its window's timing.
        return None
    skew = policy.clock_skew_seconds
    if now + skew < w.not_before:
        return (
            Reason.NOT_YET_VALID,
            f"the warrant is valid from {iso(w.not_before)}; it is now {iso(now)} "
            f"(clocks may differ by {skew} s)",
        )
    if now >= w.not_after:
        return (Reason.EXPIRED, f"the warrant expired at {iso(w.not_after)}; it is now {iso(now)}")
    if "CC" in w.categories:
        bound, what = policy.max_retrospective_cc_seconds, "content (CC)"
    else:
        bound, what = policy.max_retrospective_iri_seconds, "metadata (IRI)"
    if w.not_before < now - bound:
        return (
            Reason.RETROSPECTIVE_WINDOW,
            f"the window starts at {iso(w.not_before)}, {now - w.not_before} s before now; "
            f"a warrant for {what} may reach back at most {bound} s (stored material from "
            "before it was served needs its own authorisation)",
        )
    return None


def _check_approval_times(w: Warrant, policy: Policy, now: int) -> _Failure | None:
    """The (signed) approval timestamps must be plausible: not ahead of our clock by
    more than the skew, not older than the policy allows."""
    if w.status == "cancelled":
        return None  # stopping is always safe
    for a in w.approvals:
        if a.timestamp > now + policy.clock_skew_seconds:
            return (
                Reason.APPROVAL_IN_FUTURE,
                f"the {a.type} approval by {a.approver!r} is dated {iso(a.timestamp)}, ahead "
                f"of now ({iso(now)}) by more than {policy.clock_skew_seconds} s",
            )
        if a.timestamp < now - policy.max_approval_age_seconds:
            return (
                Reason.APPROVAL_TOO_OLD,
                f"the {a.type} approval by {a.approver!r} is dated {iso(a.timestamp)}, more "
                f"than {policy.max_approval_age_seconds} s before now ({iso(now)})",
            )
    return None


def _check_approvals(w: Warrant, trust: TrustStore) -> _Failure | None:
    for a in w.approvals:
        entry = trust.get(a.approver)
        if entry is None:
            return (Reason.UNKNOWN_APPROVER, f"approver {a.approver!r} is not in the trust store")
        if entry.role != a.type:
            return (
                Reason.ROLE_MISMATCH,
                f"approver {a.approver!r} signs as {entry.role}, not as {a.type}",
            )
    names = [a.approver for a in w.approvals]
    for name in names:
        if names.count(name) > 1:
            return (Reason.SAME_APPROVER_TWICE, f"approver {name!r} approved twice")
    types = [a.type for a in w.approvals]
    for role in APPROVAL_TYPES:
        if types.count(role) > 1:
            return (
                Reason.SAME_ROLE_TWICE,
                f"two {role} approvals; the warrant needs one executive and one "
                "judicial approval from distinct approvers",
            )
    missing = [role for role in APPROVAL_TYPES if role not in types]
    if missing:
        return (Reason.MISSING_APPROVAL, f"the warrant lacks the {' and '.join(missing)} approval")
    for a in w.approvals:
        message = w.approval_message(a.type, a.approver, a.timestamp)
        if not trust[a.approver].verify(a.signature, message):
            return (
                Reason.BAD_SIGNATURE,
                f"the {a.type} signature by {a.approver!r} does not verify over this warrant",
            )
    return None


def _check_state(w: Warrant, state: WarrantState) -> tuple[_Failure | None, str]:
    previous = state.get(w.authorisation_id)
    cancel = w.status == "cancelled"
    if previous is None:
        return None, "cancel" if cancel else "activate"
    if w.generation == previous.generation:
        return (
            Reason.REPLAYED_ID,
            f"authorisation {w.authorisation_id} generation {w.generation} was already accepted",
        ), ""
    if w.generation < previous.generation:
        return (
            Reason.STALE_GENERATION,
            f"generation {w.generation} is older than the accepted generation "
            f"{previous.generation}",
        ), ""
    if previous.status == "cancelled":
        return (
            Reason.ALREADY_CANCELLED,
            f"authorisation {w.authorisation_id} was cancelled at generation "
            f"{previous.generation}; a new case needs a new authorisation id",
        ), ""
    return None, "cancel" if cancel else "update"


def _check_directory(w: Warrant, directory: Directory) -> _Failure | None:
    if w.status == "cancelled":
        return None  # a cancellation stops tasks; the target need not still exist
    for t in w.targets:
        try:
            exists = directory(t.format, t.value)
        except Exception as exc:  # fail closed on any look-up failure
            return (
                Reason.DIRECTORY_UNAVAILABLE,
                f"the directory could not look up {t.format}:{t.value!r}: "
                f"{type(exc).__name__}: {str(exc)[:200]!r}",
            )
        if exists is not True:
            return (Reason.UNKNOWN_TARGET, f"the directory has no {t.format} {t.value!r}")
    return None


def _refused(
    reason: Reason, message: str, now: int, w: Warrant | None, digest: str | None
) -> Decision:
    return Decision(
        accepted=False,
        reason=reason.value,
        message=message,
        checked_at=now,
        authorisation_id=w.authorisation_id if w else None,
        generation=w.generation if w else None,
        case_reference=w.case_reference if w else None,
        liid=w.liid if w else None,
        not_after=w.not_after if w else None,
        digest=digest,
    )


def check_warrant(
    warrant: Warrant,
    *,
    trust: TrustStore,
    policy: Policy,
    state: WarrantState,
    now: int,
    directory: Directory,
) -> Decision:
    """Decide whether to act on ``warrant``. Pure: reads ``state``, never changes it."""
    # A Warrant built in code rather than parsed is held to the parser's rules too.
    try:
        w = warrant_from_json(warrant.to_json())
        digest = w.digest
    except WarrantError as exc:
        return _refused(Reason(exc.code), exc.message, now, None, None)
    except Exception as exc:
        return _refused(Reason.MALFORMED, f"not a well-formed warrant: {exc}", now, None, None)

    failure = (
        _check_targets(w, policy)
        or _check_policy(w, policy)
        or _check_time(w, policy, now)
        or _check_approvals(w, trust)
        # After the signatures: only signed timestamps are judged, and a forgery is
        # reported as a forgery.
        or _check_approval_times(w, policy, now)
    )
    if failure is None:
        failure, action = _check_state(w, state)
    if failure is None:
        failure = _check_directory(w, directory)
    if failure is not None:
        return _refused(failure[0], failure[1], now, w, digest)

    targets = ", ".join(str(t) for t in w.targets)
    return Decision(
        accepted=True,
        reason=Reason.ACCEPTED.value,
        message=(
            f"case {w.case_reference} generation {w.generation}: stop {'+'.join(w.categories)} "
            f"for {targets} now"
            if action == "cancel"
            else f"case {w.case_reference} generation {w.generation}: "
            f"{'+'.join(w.categories)} for {targets} until {iso(w.not_after)}"
        ),
        checked_at=now,
        action=action,
        authorisation_id=w.authorisation_id,
        generation=w.generation,
        case_reference=w.case_reference,
        liid=w.liid,
        not_after=w.not_after,
        digest=digest,
    )


def check_warrant_bytes(
    data: bytes,
    *,
    trust: TrustStore,
    policy: Policy,
    state: WarrantState,
    now: int,
    directory: Directory,
    max_bytes: int = MAX_WARRANT_BYTES,
) -> Decision:
    """Parse then check: a malformed or oversized input is a refusal too, not an error."""
    try:
        warrant = parse_warrant(data, max_bytes=max_bytes)
    except WarrantError as exc:
        digest = (
            hashlib.sha256(bytes(data)).hexdigest()
            if isinstance(data, bytes | bytearray | memoryview)
            else None
        )
        return _refused(Reason(exc.code), exc.message, now, None, digest)
    return check_warrant(
        warrant, trust=trust, policy=policy, state=state, now=now, directory=directory
    )


__all__ = [
    "ACTIONS",
    "AuthorisationRecord",
    "Decision",
    "Directory",
    "Policy",
    "WarrantState",
    "check_warrant",
    "check_warrant_bytes",
]
