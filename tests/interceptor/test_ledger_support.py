"""Shared helpers for the audit ledger tests (no tests here).

A synthetic but real case history: warrants issued and approved by the court's code,
checked by ``check_warrant`` (so the decisions are the interceptor's own), then logged
the way the interceptor logs them, log before act, with tasks and deliveries.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from interceptor.court import AgencyKeyPair, ApproverKey, approve, cancel, issue, trust_store_of
from interceptor.ledger import (
    DEFAULT_ORIGIN,
    Ledger,
    oversight_entry,
    record_delivered_entry,
    task_start_entry,
    task_stop_entry,
    warrant_decision_entry,
)
from wire.li.checks import Decision, Policy, WarrantState, check_warrant, check_warrant_bytes
from wire.li.warrant import Warrant, parse_warrant
from wire.note import Signer

NOW = 1_764_400_000  # seconds
HOUR = 3600


def _ed(seed: int) -> Ed25519PrivateKey:
    return Ed25519PrivateKey.from_private_bytes(bytes([seed]) * 32)


LOG_SIGNER = Signer(DEFAULT_ORIGIN, _ed(40))
OTHER_SIGNER = Signer(DEFAULT_ORIGIN, _ed(41))  # same name, different key: an impostor
LOG_VKEY = LOG_SIGNER.verifier().vkey()

EXEC = ApproverKey("Secretary of State", "executive", _ed(1))
JUDGE = ApproverKey("Judicial Commissioner", "judicial", _ed(2))
ROGUE = ApproverKey("Rogue Judge", "judicial", _ed(4))  # not in the trust store
AGENCY = AgencyKeyPair("agency", X25519PrivateKey.from_private_bytes(bytes([5]) * 32))
TRUST = trust_store_of([EXEC, JUDGE])
POLICY = Policy(
    jurisdiction="XX",
    csp_id="doormat",
    agency_key_fingerprint=AGENCY.public.fingerprint,
    max_window_seconds=7 * 24 * HOUR,
    max_targets=3,
)
KNOWN = {
    ("device", "alice@acme.phone"),
    ("user", "bob@acme"),
    ("device", "carol@globex.phone"),
}

ANCHOR_ID = "0b7c6f1e-2f4a-4c39-9a59-7d0c3e5b8a11"
BEACON_ID = "5f1d2c3b-4a59-4e6f-8a7b-9c0d1e2f3a4b"


def directory(fmt: str, value: str) -> bool:
    return (fmt, value) in KNOWN


def warrant(**changes: Any) -> Warrant:
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


def signed(w: Warrant, *keys: ApproverKey) -> Warrant:
    for i, key in enumerate(keys or (EXEC, JUDGE)):
        w = approve(w, key, timestamp=NOW - 600 + i)
    return w


@dataclass
class Interceptor:
    """Just enough of the scoped interceptor to write a realistic ledger: it checks a
    warrant, logs the decision, applies it, and logs tasks and deliveries."""

    ledger: Ledger
    state: WarrantState = field(default_factory=WarrantState)
    clock_ms: int = NOW * 1000
    sequence: dict[str, int] = field(default_factory=dict)

    def tick(self) -> int:
        self.clock_ms += 250
        return self.clock_ms

    def submit(self, w: Warrant) -> Decision:
        decision = check_warrant(
            w, trust=TRUST, policy=POLICY, state=self.state, now=NOW, directory=directory
        )
        self.ledger.append(warrant_decision_entry(decision, w), time_ms=self.tick())
        self.state.apply(decision)
        return decision

    def submit_bytes(self, data: bytes) -> Decision:
        decision = check_warrant_bytes(
            data, trust=TRUST, policy=POLICY, state=self.state, now=NOW, directory=directory
        )
        try:
            parsed: Warrant | None = parse_warrant(data)
        except ValueError:
            parsed = None
        self.ledger.append(warrant_decision_entry(decision, parsed), time_ms=self.tick())
        self.state.apply(decision)
        return decision

    def start(self, task_id: str, w: Warrant) -> None:
        self.ledger.append(task_start_entry(task_id, w), time_ms=self.tick())

    def stop(self, task_id: str, w: Warrant, reason: str) -> None:
        self.ledger.append(
            task_stop_entry(
                task_id,
                authorisation_id=w.authorisation_id,
                case_reference=w.case_reference,
                liid=w.liid,
                reason=reason,
            ),
            time_ms=self.tick(),
        )

    def deliver(
        self,
        w: Warrant,
        category: str,
        *,
        plaintext: bool | None = None,
        task_id: str | None = None,
        source: str = "relay",
    ) -> None:
        seq = self.sequence.get(w.liid, 0)
        self.sequence[w.liid] = seq + 1
        self.ledger.append(
            record_delivered_entry(
                liid=w.liid,
                case_reference=w.case_reference,
                category=category,
                sequence=seq,
                delivered=b"hpke ciphertext %d" % seq,
                plaintext=plaintext,
                source=source,
                task_id=task_id,
            ),
            time_ms=self.tick(),
        )


def write_scenario(ledger: Ledger, *, checkpoints: bool = True) -> None:
    """Two cases, refusals of several kinds, tasks, IRI and CC deliveries, oversight.

    Expected counts (test_ledger_report checks them):
      OP-ANCHOR-7: 2 accepted (activate, cancel), IRI+CC; task T-1 started and stopped
        (cancelled); 3 IRI; 3 CC: 2 copied by the relay task, end-to-end ciphertext
        nobody could read, and 1 exported by acme's archive, readable.
      OP-BEACON-2: 2 refused (unknown-approver, wildcard-target), 1 accepted, IRI only;
        targets device:carol@globex.phone; task T-2 running at the end; 2 IRI.
      1 unreadable warrant (malformed), 1 oversight inspection.
    """
    li = Interceptor(ledger)
    anchor = signed(warrant())
    assert li.submit(anchor).accepted
    li.start("T-1", anchor)
    if checkpoints:
        ledger.checkpoint()
    for _ in range(3):
        li.deliver(anchor, "IRI", task_id="T-1")
    li.deliver(anchor, "CC", plaintext=False, task_id="T-1")
    li.deliver(anchor, "CC", plaintext=False, task_id="T-1")
    li.deliver(anchor, "CC", plaintext=True, source="enterprise:acme")

    beacon_draft = warrant(
        case_reference="OP-BEACON-2",
        targets=["device:carol@globex.phone"],
        categories=["IRI"],
        authorisation_id=BEACON_ID,
    )
    forged = signed(beacon_draft, EXEC, ROGUE)
    assert li.submit(forged).reason == "unknown-approver"
    wild = signed(
        warrant(
            case_reference="OP-BEACON-2",
            targets=["user:*"],
            categories=["IRI"],
            authorisation_id=BEACON_ID,
        )
    )
    assert li.submit(wild).reason == "wildcard-target"
    assert li.submit_bytes(b"{not a warrant").reason == "malformed"
    beacon = signed(beacon_draft)
    assert li.submit(beacon).accepted
    li.start("T-2", beacon)
    if checkpoints:
        ledger.checkpoint()
    li.deliver(beacon, "IRI", task_id="T-2")
    li.deliver(beacon, "IRI", task_id="T-2")

    stop = signed(cancel(anchor))
    assert li.submit(stop).action == "cancel"
    li.stop("T-1", anchor, "cancelled")
    ledger.append(
        oversight_entry("inspection", "Investigatory Powers Commissioner", "annual inspection"),
        time_ms=li.tick(),
    )
    if checkpoints:
        ledger.checkpoint()


def simple_ledger(path: Path, n: int, *, checkpoint_at: Sequence[int] = ()) -> Ledger:
    """``n`` oversight entries, a checkpoint after each size in ``checkpoint_at``."""
    ledger = Ledger(path, signer=LOG_SIGNER)
    for i in range(n):
        ledger.append(oversight_entry("note", "Clerk", f"entry {i}"), time_ms=1_000 + i)
        if i + 1 in checkpoint_at:
            ledger.checkpoint()
    return ledger


def row_value(path: Path, table: str, column: str, key_column: str, key: int) -> Any:
    with sqlite3.connect(path) as conn:
        row = conn.execute(
            f"SELECT {column} FROM {table} WHERE {key_column} = ?", (key,)
        ).fetchone()
    conn.close()
    assert row is not None, (table, key)
    return row[0]


def set_row_value(
    path: Path, table: str, column: str, key_column: str, key: int, value: Any
) -> None:
    """Tamper as an attacker with write access to the file would: a plain UPDATE."""
    conn = sqlite3.connect(path)
    with conn:
        conn.execute(f"UPDATE {table} SET {column} = ? WHERE {key_column} = ?", (value, key))
    conn.close()


def flip_byte(value: bytes, position: int, mask: int = 0x01) -> bytes:
    data = bytearray(value)
    data[position % len(data)] ^= mask
    return bytes(data)
