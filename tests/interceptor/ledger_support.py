"""Shared helpers for the audit ledger tests (a helper module, not collected).

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

from interceptor.court import cancel
from interceptor.ledger import (
    DEFAULT_ORIGIN,
    Ledger,
    oversight_entry,
    record_delivered_entry,
    task_start_entry,
    task_stop_entry,
    warrant_decision_entry,
)
from tests.support.warrants import (
    BEACON_ID,
    EXEC,
    NOW,
    POLICY,
    ROGUE,
    TRUST,
    directory,
    draft,
    ed25519_key,
    signed,
)
from wire.li.checks import Decision, WarrantState, check_warrant, check_warrant_bytes
from wire.li.warrant import Warrant, parse_warrant
from wire.note import Signer

LOG_SIGNER = Signer(DEFAULT_ORIGIN, ed25519_key(40))
OTHER_SIGNER = Signer(DEFAULT_ORIGIN, ed25519_key(41))  # same name, different key: an impostor
LOG_VKEY = LOG_SIGNER.verifier().vkey()


def task_stop_of(task_id: str, w: Warrant, reason: str) -> dict[str, Any]:
    """The task-stop entry of a task that ran under ``w``."""
    return task_stop_entry(
        task_id,
        authorisation_id=w.authorisation_id,
        case_reference=w.case_reference,
        liid=w.liid,
        reason=reason,
    )


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
        self.ledger.append(task_stop_of(task_id, w, reason), time_ms=self.tick())

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
    anchor = signed(draft())
    assert li.submit(anchor).accepted
    li.start("T-1", anchor)
    if checkpoints:
        ledger.checkpoint()
    for _ in range(3):
        li.deliver(anchor, "IRI", task_id="T-1")
    li.deliver(anchor, "CC", plaintext=False, task_id="T-1")
    li.deliver(anchor, "CC", plaintext=False, task_id="T-1")
    li.deliver(anchor, "CC", plaintext=True, source="enterprise:acme")

    beacon_draft = draft(
        case_reference="OP-BEACON-2",
        targets=["device:carol@globex.phone"],
        categories=["IRI"],
        authorisation_id=BEACON_ID,
    )
    forged = signed(beacon_draft, EXEC, ROGUE)
    assert li.submit(forged).reason == "unknown-approver"
    wild = signed(
        draft(
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
