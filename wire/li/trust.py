"""What the interceptor trusts: the court's approver keys and the agency's delivery key.

Sans-I/O: everything here parses from and encodes to bytes; reading the files is the
caller's business.

Trust store (``trust.json``)::

    {"approvers": [
        {"name": "Secretary of State", "role": "executive", "public_key": "<base64, 32 bytes>"},
        {"name": "Judicial Commissioner", "role": "judicial", "public_key": "<base64>"}]}

Each approver has exactly one role and one Ed25519 key; names and keys are unique, so a
key cannot act in two roles under two names. A warrant's approval names its approver;
the store says which key must have signed it and in which role.

Agency public key (``agency.pub``)::

    {"agency_id": "agency", "public_key": "<base64, 32-byte X25519>", "fingerprint": "<hex>"}

The fingerprint is the hex SHA-256 of the raw 32-byte X25519 public key. A warrant names
its delivery destination by this fingerprint, and the interceptor delivers only to the
fingerprint it has pinned (see ``Policy`` in ``wire.li.checks``).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from wire.b64 import B64Error, b64decode, b64encode
from wire.li.errors import TrustError

ROLES = ("executive", "judicial")
KEY_BYTES = 32
MAX_TRUST_BYTES = 64 * 1024
# An approver's name: shown to people, so spaces and capitals are fine; no control
# characters, nothing that needs escaping.
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 ._'()-]{0,63}$")
# Agency, CSP ids: short lower-case tokens.
TOKEN_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")
FINGERPRINT_RE = re.compile(r"^[0-9a-f]{64}$")
_P25519 = 2**255 - 19


def key_bytes(value: object, what: str, error: type[Exception], length: int) -> bytes:
    """Key or signature material: ``wire.b64``'s strict, canonical base64 of exactly
    ``length`` bytes (a flipped bit is always noticed), refused as ``error``."""
    try:
        return b64decode(value, what, length=length)
    except B64Error as exc:
        raise error(str(exc)) from None


def key_fingerprint(public_key: bytes) -> str:
    """Hex SHA-256 of a raw public key: how a warrant names the agency's delivery key."""
    return hashlib.sha256(public_key).hexdigest()


def load_json(data: bytes, what: str, error: type[Exception], max_bytes: int) -> Any:
    """Strict JSON: UTF-8, size-limited, no duplicate keys, no NaN/Infinity."""
    if len(data) > max_bytes:
        raise error(f"{what} is {len(data)} bytes, over the {max_bytes}-byte limit")
    try:
        text = bytes(data).decode("utf-8")
    except UnicodeDecodeError:
        raise error(f"{what} is not UTF-8 text") from None

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in items:
            if key in out:
                raise error(f"{what} repeats the key {key!r}")
            out[key] = value
        return out

    def constant(name: str) -> Any:
        raise error(f"{what} contains {name}, which is not JSON")

    try:
        return json.loads(text, object_pairs_hook=pairs, parse_constant=constant)
    except error:
        raise
    except (ValueError, RecursionError) as exc:
        raise error(f"{what} is not JSON: {exc}") from None


def exact_fields(
    obj: object, what: str, fields: Iterable[str], error: type[Exception]
) -> dict[str, Any]:
    """``obj`` must be a JSON object with exactly ``fields``."""
    if not isinstance(obj, dict):
        raise error(f"{what} must be a JSON object")
    wanted = set(fields)
    missing = wanted - obj.keys()
    if missing:
        raise error(f"{what} lacks field(s): {', '.join(sorted(missing))}")
    unknown = obj.keys() - wanted
    if unknown:
        names = (k if k.isidentifier() else repr(k) for k in sorted(map(str, unknown)))
        raise error(f"{what} has unknown field(s): {', '.join(names)}")
    return obj


@dataclass(frozen=True)
class TrustedApprover:
    name: str
    role: str
    public_key: bytes  # raw 32-byte Ed25519

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not NAME_RE.fullmatch(self.name):
            raise TrustError(f"approver name {self.name!r} is not a valid name")
        if self.role not in ROLES:
            raise TrustError(f"approver {self.name!r}: role must be one of {', '.join(ROLES)}")
        if not isinstance(self.public_key, bytes) or len(self.public_key) != KEY_BYTES:
            raise TrustError(f"approver {self.name!r}: public key must be {KEY_BYTES} bytes")
        try:
            Ed25519PublicKey.from_public_bytes(self.public_key)
        except ValueError:
            raise TrustError(f"approver {self.name!r}: not an Ed25519 public key") from None

    @property
    def fingerprint(self) -> str:
        return key_fingerprint(self.public_key)

    def verify(self, signature: bytes, message: bytes) -> bool:
        try:
            Ed25519PublicKey.from_public_bytes(self.public_key).verify(signature, message)
        except (InvalidSignature, ValueError):
            return False
        return True

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "role": self.role, "public_key": b64encode(self.public_key)}


class TrustStore(Mapping[str, TrustedApprover]):
    """The approvers the interceptor trusts, by name. Immutable."""

    def __init__(self, approvers: Iterable[TrustedApprover]) -> None:
        by_name: dict[str, TrustedApprover] = {}
        keys: dict[bytes, str] = {}
        for approver in approvers:
            if approver.name in by_name:
                raise TrustError(f"trust store names {approver.name!r} twice")
            if approver.public_key in keys:
                raise TrustError(
                    f"trust store lists one key for both {keys[approver.public_key]!r} "
                    f"and {approver.name!r}"
                )
            by_name[approver.name] = approver
            keys[approver.public_key] = approver.name
        self._by_name = by_name

    def __getitem__(self, name: str) -> TrustedApprover:
        return self._by_name[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._by_name)

    def __len__(self) -> int:
        return len(self._by_name)

    def __repr__(self) -> str:
        inner = ", ".join(f"{a.name!r}: {a.role}" for a in self._by_name.values())
        return f"TrustStore({{{inner}}})"

    def to_json(self) -> dict[str, Any]:
        return {"approvers": [a.to_json() for a in self._by_name.values()]}

    def encode(self) -> bytes:
        return json.dumps(self.to_json(), indent=2).encode("utf-8") + b"\n"

    @classmethod
    def from_json(cls, obj: object) -> TrustStore:
        top = exact_fields(obj, "trust store", ("approvers",), TrustError)
        entries = top["approvers"]
        if not isinstance(entries, list):
            raise TrustError("trust store: 'approvers' must be a list")
        approvers = []
        for i, entry in enumerate(entries):
            where = f"trust store approver #{i + 1}"
            fields = exact_fields(entry, where, ("name", "role", "public_key"), TrustError)
            name, role = fields["name"], fields["role"]
            if not isinstance(name, str) or not NAME_RE.fullmatch(name):
                raise TrustError(f"{where}: 'name' is not a valid name")
            if role not in ROLES:
                raise TrustError(f"{where}: 'role' must be one of {', '.join(ROLES)}")
            key = key_bytes(
                fields["public_key"], f"{where}: 'public_key'", TrustError, KEY_BYTES
            )
            approvers.append(TrustedApprover(name=name, role=role, public_key=key))
        return cls(approvers)

    @classmethod
    def parse(cls, data: bytes, *, max_bytes: int = MAX_TRUST_BYTES) -> TrustStore:
        return cls.from_json(load_json(data, "trust store", TrustError, max_bytes))


def check_x25519_public(raw: bytes, what: str) -> bytes:
    """32 bytes, canonical (below p, top bit clear): every bit of the key means something,
    so two spellings of one key cannot have two fingerprints."""
    if len(raw) != KEY_BYTES:
        raise TrustError(f"{what} must be {KEY_BYTES} bytes")
    if int.from_bytes(raw, "little") >= _P25519:
        raise TrustError(f"{what} is not a canonical X25519 public key")
    return raw


@dataclass(frozen=True)
class AgencyPublicKey:
    """The agency's delivery key (X25519, for HPKE), as the court and interceptor see it."""

    agency_id: str
    public_key: bytes

    def __post_init__(self) -> None:
        if not isinstance(self.agency_id, str) or not TOKEN_RE.fullmatch(self.agency_id):
            raise TrustError(f"agency id {self.agency_id!r} is not a valid id")
        check_x25519_public(self.public_key, "agency public key")

    @property
    def fingerprint(self) -> str:
        return key_fingerprint(self.public_key)

    def to_json(self) -> dict[str, Any]:
        return {
            "agency_id": self.agency_id,
            "public_key": b64encode(self.public_key),
            "fingerprint": self.fingerprint,
        }

    def encode(self) -> bytes:
        return json.dumps(self.to_json(), indent=2).encode("utf-8") + b"\n"

    @classmethod
    def from_json(cls, obj: object) -> AgencyPublicKey:
        if isinstance(obj, dict) and "private_key" in obj:
            raise TrustError(
                "this is the agency's private key; give its public key file (agency.pub)"
            )
        fields = exact_fields(
            obj, "agency public key", ("agency_id", "public_key", "fingerprint"), TrustError
        )
        agency_id = fields["agency_id"]
        if not isinstance(agency_id, str) or not TOKEN_RE.fullmatch(agency_id):
            raise TrustError("agency public key: 'agency_id' is not a valid id")
        raw = key_bytes(
            fields["public_key"], "agency public key: 'public_key'", TrustError, KEY_BYTES
        )
        key = cls(agency_id=agency_id, public_key=raw)
        if fields["fingerprint"] != key.fingerprint:
            raise TrustError("agency public key: 'fingerprint' does not match the key")
        return key

    @classmethod
    def parse(cls, data: bytes) -> AgencyPublicKey:
        return cls.from_json(load_json(data, "agency public key", TrustError, 4096))


__all__ = [
    "NAME_RE",
    "ROLES",
    "TOKEN_RE",
    "AgencyPublicKey",
    "TrustStore",
    "TrustedApprover",
    "key_bytes",
    "key_fingerprint",
]
