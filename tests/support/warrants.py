"""The court's side of the warrant tests: fixed approver and agency keys, the trust
store, the interceptor's policy and directory, and warrant builders.

Every key is fixed (seeded), so warrants, their digests and whatever the ledger tests
log from them are the same on every run.
"""

from __future__ import annotations

from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from interceptor.court import AgencyKeyPair, ApproverKey, approve, issue, trust_store_of
from wire.li.checks import Policy
from wire.li.warrant import Warrant

NOW = 1_764_400_000  # seconds
HOUR = 3600


def ed25519_key(seed: int) -> Ed25519PrivateKey:
    return Ed25519PrivateKey.from_private_bytes(bytes([seed]) * 32)


EXEC = ApproverKey("Secretary of State", "executive", ed25519_key(1))
JUDGE = ApproverKey("Judicial Commissioner", "judicial", ed25519_key(2))
JUDGE2 = ApproverKey("Judge Two", "judicial", ed25519_key(3))
ROGUE = ApproverKey("Rogue Judge", "judicial", ed25519_key(4))  # not in the trust store
AGENCY = AgencyKeyPair("agency", X25519PrivateKey.from_private_bytes(bytes([5]) * 32))
OTHER_AGENCY = AgencyKeyPair("agency", X25519PrivateKey.from_private_bytes(bytes([6]) * 32))
TRUST = trust_store_of([EXEC, JUDGE, JUDGE2])
POLICY = Policy(
    jurisdiction="XX",
    csp_id="doormat",
    agency_key_fingerprint=AGENCY.public.fingerprint,
    max_window_seconds=7 * 24 * HOUR,
    max_targets=3,
    # The shared fixtures' windows open an hour before NOW (IRI and CC): an hour of
    # retrospective CC keeps them valid; the shipped default is much shorter.
    max_retrospective_cc_seconds=HOUR,
)
KNOWN = {
    ("device", "alice@acme.phone"),
    ("device", "alice@acme.laptop"),
    ("user", "alice@acme"),
    ("user", "bob@acme"),
    ("device", "carol@globex.phone"),
}

ANCHOR_ID = "0b7c6f1e-2f4a-4c39-9a59-7d0c3e5b8a11"
BEACON_ID = "5f1d2c3b-4a59-4e6f-8a7b-9c0d1e2f3a4b"


def directory(fmt: str, value: str) -> bool:
    """The interceptor's directory lookup: is there such a device or user?"""
    return (fmt, value) in KNOWN


def draft(**changes: Any) -> Warrant:
    """An unsigned warrant for case OP-ANCHOR-7 (IRI and CC on alice's phone and bob,
    valid for the day around NOW), with ``changes`` to any of its fields."""
    fields: dict[str, Any] = {
        "case_reference": "OP-ANCHOR-7",
        "targets": ["device:alice@acme.phone", "user:bob@acme"],
        "categories": ["IRI", "CC"],
        "not_before": NOW - HOUR,
        "not_after": NOW + 23 * HOUR,
        "jurisdiction": "XX",
        "csp_id": "doormat",
        "agency": AGENCY.public,
        "authorisation_id": ANCHOR_ID,
    }
    fields.update(changes)
    return issue(**fields)


def signed(w: Warrant | None = None, *keys: ApproverKey) -> Warrant:
    """``w`` (default: ``draft()``) approved by ``keys`` (default: EXEC then JUDGE),
    ten minutes before NOW."""
    w = draft() if w is None else w
    for i, key in enumerate(keys or (EXEC, JUDGE)):
        w = approve(w, key, timestamp=NOW - 600 + i)
    return w
