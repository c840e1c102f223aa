"""The court: approver keys, drafting warrants, and signing approvals.

The lab's court follows the "double lock" model: a warrant takes effect only with two
approvals from distinct people in distinct roles, an *executive* one (a minister, say)
and a *judicial* one (a judge). Each approver holds an Ed25519 key; their public keys,
with names and roles, form the interceptor's trust store.

Sans-I/O apart from the clock default in :func:`approve`: key files are encoded to and
parsed from bytes here, and written by ``doormat court``.

Approver key file (``executive.key``, ``judicial.key``; mode 0600)::

    {"name": "Judicial Commissioner", "role": "judicial", "private_key": "<base64, 32 bytes>"}

Agency key pair (``agency.key`` mode 0600 / ``agency.pub``): an X25519 key the agency
receives HPKE-encrypted records with; see ``wire.li.trust.AgencyPublicKey``.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from wire.b64 import b64encode
from wire.li.errors import CourtError, TrustError, WarrantError
from wire.li.trust import (
    KEY_BYTES,
    NAME_RE,
    ROLES,
    TOKEN_RE,
    AgencyPublicKey,
    TrustedApprover,
    TrustStore,
    exact_fields,
    key_bytes,
    load_json,
)
from wire.li.warrant import (
    DEFAULT_LEGAL_TYPE,
    Approval,
    Delivery,
    Target,
    Warrant,
    derive_liid,
    warrant_from_json,
)

DEFAULT_NAMES = {"executive": "Secretary of State", "judicial": "Judicial Commissioner"}
DEFAULT_AGENCY_ID = "agency"

_RAW = serialization.Encoding.Raw
_RAW_PRIV = serialization.PrivateFormat.Raw
_RAW_PUB = serialization.PublicFormat.Raw
_NO_ENC = serialization.NoEncryption()


@dataclass(frozen=True)
class ApproverKey:
    """An approver's signing key, with the name and role it approves under."""

    name: str
    role: str
    private_key: Ed25519PrivateKey

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not NAME_RE.fullmatch(self.name):
            raise CourtError(f"approver name {self.name!r} is not a valid name")
        if self.role not in ROLES:
            raise CourtError(f"role must be one of {', '.join(ROLES)}, not {self.role!r}")

    @classmethod
    def generate(cls, name: str, role: str) -> ApproverKey:
        return cls(name=name, role=role, private_key=Ed25519PrivateKey.generate())

    @property
    def public_key(self) -> bytes:
        return self.private_key.public_key().public_bytes(_RAW, _RAW_PUB)

    def trusted(self) -> TrustedApprover:
        """This approver's entry in the interceptor's trust store."""
        return TrustedApprover(name=self.name, role=self.role, public_key=self.public_key)

    def sign(self, message: bytes) -> bytes:
        return self.private_key.sign(message)

    def encode(self) -> bytes:
        raw = self.private_key.private_bytes(_RAW, _RAW_PRIV, _NO_ENC)
        obj = {"name": self.name, "role": self.role, "private_key": b64encode(raw)}
        return json.dumps(obj, indent=2).encode("utf-8") + b"\n"

    @classmethod
    def parse(cls, data: bytes) -> ApproverKey:
        obj = load_json(data, "approver key file", CourtError, 4096)
        if isinstance(obj, dict) and "approvers" in obj:
            raise CourtError("this is a trust store, not an approver's private key file")
        fields = exact_fields(obj, "approver key file", ("name", "role", "private_key"), CourtError)
        raw = key_bytes(
            fields["private_key"], "approver key file: 'private_key'", CourtError, KEY_BYTES
        )
        return cls(
            name=fields["name"],
            role=fields["role"],
            private_key=Ed25519PrivateKey.from_private_bytes(raw),
        )


@dataclass(frozen=True)
class AgencyKeyPair:
    """The agency's X25519 delivery key pair (records reach it HPKE-encrypted)."""

    agency_id: str
    private_key: X25519PrivateKey

    def __post_init__(self) -> None:
        if not isinstance(self.agency_id, str) or not TOKEN_RE.fullmatch(self.agency_id):
            raise CourtError(f"agency id {self.agency_id!r} is not a valid id")

    @classmethod
    def generate(cls, agency_id: str = DEFAULT_AGENCY_ID) -> AgencyKeyPair:
        return cls(agency_id=agency_id, private_key=X25519PrivateKey.generate())

    @property
    def public(self) -> AgencyPublicKey:
        raw = self.private_key.public_key().public_bytes(_RAW, _RAW_PUB)
        return AgencyPublicKey(agency_id=self.agency_id, public_key=raw)

    def encode(self) -> bytes:
        raw = self.private_key.private_bytes(_RAW, _RAW_PRIV, _NO_ENC)
        obj = {"agency_id": self.agency_id, "private_key": b64encode(raw)}
        return json.dumps(obj, indent=2).encode("utf-8") + b"\n"

    @classmethod
    def parse(cls, data: bytes) -> AgencyKeyPair:
        fields = exact_fields(
            load_json(data, "agency key file", CourtError, 4096),
            "agency key file",
            ("agency_id", "private_key"),
            CourtError,
        )
        raw = key_bytes(
            fields["private_key"], "agency key file: 'private_key'", CourtError, KEY_BYTES
        )
        return cls(
            agency_id=fields["agency_id"], private_key=X25519PrivateKey.from_private_bytes(raw)
        )


def trust_store_of(keys: Iterable[ApproverKey]) -> TrustStore:
    try:
        return TrustStore(k.trusted() for k in keys)
    except TrustError as exc:
        raise CourtError(str(exc)) from None


def _validated(warrant: Warrant) -> Warrant:
    try:
        return warrant_from_json(warrant.to_json())
    except WarrantError as exc:
        raise CourtError(f"not a valid warrant: {exc}") from None


def _target(t: Target | tuple[str, str] | str) -> Target:
    if isinstance(t, Target):
        return t
    if isinstance(t, str):
        fmt, sep, value = t.partition(":")
        if not sep:
            raise CourtError(f"target {t!r} must be FORMAT:VALUE, e.g. device:alice@acme.phone")
        return Target(format=fmt, value=value)
    return Target(format=t[0], value=t[1])


def issue(
    *,
    case_reference: str,
    targets: Sequence[Target | tuple[str, str] | str],
    categories: Sequence[str],
    not_before: int,
    not_after: int,
    jurisdiction: str,
    csp_id: str,
    agency: AgencyPublicKey,
    legal_type: str = DEFAULT_LEGAL_TYPE,
    authorisation_id: str | None = None,
    generation: int = 1,
    status: str = "active",
    liid: str | None = None,
) -> Warrant:
    """Draft an unsigned warrant. Raises CourtError if it is not even well-formed.

    Deliberately, the draft may name targets the interceptor will refuse (a wildcard,
    an unknown user): the court drafts, the interceptor decides, and the lab shows both.
    """
    aid = authorisation_id or str(uuid.uuid4())
    draft = Warrant(
        authorisation_id=aid,
        case_reference=case_reference,
        generation=generation,
        legal_type=legal_type,
        jurisdiction=jurisdiction,
        csp_id=csp_id,
        status=status,
        targets=tuple(_target(t) for t in targets),
        categories=tuple(categories),
        not_before=not_before,
        not_after=not_after,
        liid=liid if liid is not None else derive_liid(jurisdiction, aid),
        delivery=Delivery(agency_id=agency.agency_id, key_fingerprint=agency.fingerprint),
    )
    return _validated(draft)


def sign_approval(
    warrant: Warrant,
    key: ApproverKey,
    *,
    timestamp: int,
    type: str | None = None,
    approver: str | None = None,
) -> Approval:
    """Sign one approval of ``warrant``. ``type`` and ``approver`` default to the key's
    own role and name; overriding them forges a claim (the tests use this)."""
    t = key.role if type is None else type
    name = key.name if approver is None else approver
    signature = key.sign(warrant.approval_message(t, name, timestamp))
    return Approval(type=t, approver=name, timestamp=timestamp, signature=signature)


def approve(warrant: Warrant, key: ApproverKey, *, timestamp: int | None = None) -> Warrant:
    """Return ``warrant`` with one more approval, signed by ``key``.

    Refuses only a second approval by the same approver. Two approvals in the same role
    are not stopped here: the interceptor refuses them (``same-role-twice``).
    """
    warrant = _validated(warrant)
    if any(a.approver == key.name for a in warrant.approvals):
        raise CourtError(f"{key.name!r} has already approved this warrant")
    ts = int(time.time()) if timestamp is None else timestamp
    approval = sign_approval(warrant, key, timestamp=ts)
    return _validated(replace(warrant, approvals=(*warrant.approvals, approval)))


def amend(warrant: Warrant, **changes: Any) -> Warrant:
    """Draft the next generation of ``warrant`` (an update): same authorisation id and
    LIID, generation + 1, no approvals, with ``changes`` applied (targets, categories,
    not_before, not_after, ...). It needs both approvals again."""
    for forbidden in ("authorisation_id", "approvals", "generation"):
        if forbidden in changes:
            raise CourtError(f"an amendment cannot change {forbidden}")
    if warrant.status == "cancelled":
        raise CourtError("a cancelled authorisation cannot be amended; issue a new one")
    if "targets" in changes:
        changes["targets"] = tuple(_target(t) for t in changes["targets"])
    if "categories" in changes:
        changes["categories"] = tuple(changes["categories"])
    try:
        draft = replace(warrant, generation=warrant.generation + 1, approvals=(), **changes)
    except TypeError as exc:
        raise CourtError(f"cannot amend: {exc}") from None
    return _validated(draft)


def cancel(warrant: Warrant) -> Warrant:
    """Draft the cancellation of ``warrant``: generation + 1, status ``cancelled``, no
    approvals. Once both approvals are on it, the interceptor stops the case at once."""
    if warrant.status == "cancelled":
        raise CourtError("this warrant is already a cancellation")
    return _validated(
        replace(warrant, generation=warrant.generation + 1, status="cancelled", approvals=())
    )


__all__ = [
    "DEFAULT_AGENCY_ID",
    "DEFAULT_NAMES",
    "AgencyKeyPair",
    "ApproverKey",
    "amend",
    "approve",
    "cancel",
    "issue",
    "sign_approval",
    "trust_store_of",
]
