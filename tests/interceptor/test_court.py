"""The court's tools and the trust material: key files, trust store, agency key, policy,
drafting, approving, amending and cancelling warrants."""

from __future__ import annotations

import hashlib
import json
import re
import time
from typing import Any

import pytest

from interceptor.court import (
    AgencyKeyPair,
    ApproverKey,
    amend,
    approve,
    cancel,
    issue,
    trust_store_of,
)
from wire.b64 import b64encode
from wire.li.checks import Policy
from wire.li.errors import CourtError, TrustError
from wire.li.trust import AgencyPublicKey, TrustedApprover, TrustStore
from wire.li.warrant import Target, derive_liid, parse_warrant

EXEC = ApproverKey.generate("Secretary of State", "executive")
JUDGE = ApproverKey.generate("Judicial Commissioner", "judicial")
AGENCY = AgencyKeyPair.generate("agency")
NOW = 1_764_400_000


def draft(**changes: Any) -> Any:
    fields: dict[str, Any] = {
        "case_reference": "OP-1",
        "targets": [
            "device:alice@acme.phone",
            ("user", "bob@acme"),
            Target("user", "carol@globex"),
        ],
        "categories": ["IRI"],
        "not_before": NOW,
        "not_after": NOW + 3600,
        "jurisdiction": "XX",
        "csp_id": "doormat",
        "agency": AGENCY.public,
    }
    fields.update(changes)
    return issue(**fields)


# ------------------------------------------------------------------------- key files


def test_approver_key_file_round_trip() -> None:
    again = ApproverKey.parse(JUDGE.encode())
    assert (again.name, again.role, again.public_key) == (JUDGE.name, "judicial", JUDGE.public_key)
    assert again.sign(b"m") == JUDGE.sign(b"m")  # Ed25519 is deterministic: same key


@pytest.mark.parametrize(
    ("obj", "needle"),
    [
        ({"approvers": []}, "trust store, not an approver"),
        ({"name": "A", "role": "judicial"}, "lacks field(s): private_key"),
        ({"name": "A", "role": "judge", "private_key": b64encode(b"k" * 32)}, "role must be"),
        ({"name": "", "role": "judicial", "private_key": b64encode(b"k" * 32)}, "valid name"),
        ({"name": "A", "role": "judicial", "private_key": b64encode(b"k" * 31)}, "32 bytes"),
        ({"name": "A", "role": "judicial", "private_key": "!!"}, "base64"),
    ],
)
def test_approver_key_file_is_strict(obj: dict[str, Any], needle: str) -> None:
    with pytest.raises(CourtError, match=re.escape(needle)):
        ApproverKey.parse(json.dumps(obj).encode())


def test_agency_key_files() -> None:
    pub = AGENCY.public
    assert pub.fingerprint == hashlib.sha256(pub.public_key).hexdigest()
    assert AgencyPublicKey.parse(pub.encode()) == pub
    assert AgencyKeyPair.parse(AGENCY.encode()).public == pub
    with pytest.raises(TrustError, match="private key"):
        AgencyPublicKey.parse(AGENCY.encode())
    tampered = pub.to_json() | {"fingerprint": "0" * 64}
    with pytest.raises(TrustError, match="does not match"):
        AgencyPublicKey.parse(json.dumps(tampered).encode())
    # The same key with its ignored top bit set would have another fingerprint: refused.
    high = bytearray(pub.public_key)
    high[31] |= 0x80
    with pytest.raises(TrustError, match="canonical"):
        AgencyPublicKey(agency_id="agency", public_key=bytes(high))


# ----------------------------------------------------------------------- trust store


def test_trust_store_round_trip_and_lookup() -> None:
    trust = trust_store_of([EXEC, JUDGE])
    again = TrustStore.parse(trust.encode())
    assert dict(again) == dict(trust) and len(again) == 2
    entry = again["Judicial Commissioner"]
    assert entry.role == "judicial" and entry.verify(JUDGE.sign(b"x"), b"x")
    assert not entry.verify(EXEC.sign(b"x"), b"x")
    assert not entry.verify(b"\x00" * 64, b"x")
    assert again.get("Nobody") is None


def _store(*entries: dict[str, Any]) -> bytes:
    return json.dumps({"approvers": list(entries)}).encode()


E = {"name": "E", "role": "executive", "public_key": b64encode(EXEC.public_key)}
J = {"name": "J", "role": "judicial", "public_key": b64encode(JUDGE.public_key)}


@pytest.mark.parametrize(
    ("data", "needle"),
    [
        (b"", "not JSON"),
        (b"[]", "must be a JSON object"),
        (b'{"approvers": {}}', "must be a list"),
        (b'{"approvers": [], "x": 1}', "unknown field"),
        (_store(E, E), "names 'E' twice"),
        (_store(E, J | {"public_key": E["public_key"]}), "one key for both"),
        (_store(E | {"role": "police"}), "'role' must be one of"),
        (_store(E | {"extra": 1}), "unknown field"),
        (_store(E | {"public_key": b64encode(b"k" * 31)}), "32 bytes"),
        (_store(E | {"name": "E\n"}), "valid name"),
        (b'{"approvers": [], "approvers": []}', "repeats the key"),
    ],
)
def test_trust_store_is_strict(data: bytes, needle: str) -> None:
    with pytest.raises(TrustError, match=re.escape(needle)):
        TrustStore.parse(data)


def test_trusted_approver_checks_its_fields() -> None:
    with pytest.raises(TrustError):
        TrustedApprover(name="A", role="police", public_key=EXEC.public_key)
    with pytest.raises(TrustError):
        TrustedApprover(name="A", role="judicial", public_key=b"short")


def test_policy_file_is_strict() -> None:
    policy = Policy("XX", "doormat", AGENCY.public.fingerprint, 3600, 2)
    assert Policy.parse(json.dumps(policy.to_json()).encode()) == policy
    for bad in (
        policy.to_json() | {"max_targets": 0},
        policy.to_json() | {"max_window_seconds": True},
        policy.to_json() | {"jurisdiction": "xx"},
        policy.to_json() | {"agency_key_fingerprint": "abc"},
        policy.to_json() | {"extra": 1},
    ):
        with pytest.raises(TrustError):
            Policy.parse(json.dumps(bad).encode())


# -------------------------------------------------------------------------- drafting


def test_issue_drafts_an_unsigned_well_formed_warrant() -> None:
    w = draft()
    assert w.approvals == () and w.generation == 1 and w.status == "active"
    assert w.delivery.key_fingerprint == AGENCY.public.fingerprint
    assert w.liid == derive_liid("XX", w.authorisation_id) and len(w.liid) <= 25
    assert [str(t) for t in w.targets] == [
        "device:alice@acme.phone",
        "user:bob@acme",
        "user:carol@globex",
    ]
    assert parse_warrant(w.encode()) == w
    assert draft().authorisation_id != w.authorisation_id  # a fresh UUID each time


def test_issue_refuses_a_malformed_draft_but_drafts_a_wildcard() -> None:
    with pytest.raises(CourtError, match="jurisdiction"):
        draft(jurisdiction="xx")
    with pytest.raises(CourtError, match="not_after"):
        draft(not_after=NOW)
    with pytest.raises(CourtError, match="FORMAT:VALUE"):
        draft(targets=["alice@acme"])
    # The court may draft what the interceptor will refuse: the lab shows both sides.
    assert draft(targets=["user:*"]).targets == (Target("user", "*"),)


def test_approve_signs_over_the_warrant() -> None:
    w = approve(draft(), EXEC, timestamp=NOW + 1)
    w = approve(w, JUDGE, timestamp=NOW + 2)
    assert [a.type for a in w.approvals] == ["executive", "judicial"]
    trust = trust_store_of([EXEC, JUDGE])
    for a in w.approvals:
        message = w.approval_message(a.type, a.approver, a.timestamp)
        assert trust[a.approver].verify(a.signature, message)
        # The message covers the body and this approval's own header, nothing else.
        assert json.loads(message) == {
            "context": "doormat-warrant-approval/1",
            "approval": {"type": a.type, "approver": a.approver, "timestamp": a.timestamp},
            "warrant": w.body(),
        }
    with pytest.raises(CourtError, match="already approved"):
        approve(w, JUDGE, timestamp=NOW + 3)


def test_approve_defaults_to_the_clock() -> None:
    before = int(time.time())
    w = approve(draft(), EXEC)
    assert before <= w.approvals[0].timestamp <= int(time.time())


def test_amend_and_cancel() -> None:
    w = approve(approve(draft(), EXEC, timestamp=NOW), JUDGE, timestamp=NOW)
    g2 = amend(w, targets=["user:bob@acme"], categories=["IRI", "CC"], not_after=NOW + 7200)
    assert (g2.generation, g2.authorisation_id, g2.liid) == (2, w.authorisation_id, w.liid)
    assert g2.approvals == () and g2.targets == (Target("user", "bob@acme"),)
    assert g2.categories == ("IRI", "CC")
    for forbidden in ("authorisation_id", "generation", "approvals"):
        with pytest.raises(CourtError, match="cannot change"):
            amend(w, **{forbidden: None})
    with pytest.raises(CourtError, match="cannot amend"):
        amend(w, colour="red")
    c = cancel(g2)
    assert (c.generation, c.status, c.approvals) == (3, "cancelled", ())
    assert c.targets == g2.targets
    with pytest.raises(CourtError, match="already a cancellation"):
        cancel(c)
    with pytest.raises(CourtError, match="cannot be amended"):
        amend(c)
