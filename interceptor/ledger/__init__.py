"""The audit ledger: the interceptor logs before it acts, in an append-only Merkle log that
oversight can verify and report on (docs/ledger.md).

One module per concern; all but the store are sans I/O and read no clock:

* ``entries``: the entry types, their validation and canonical bytes, and the builders
  (``warrant_decision_entry``, ``task_start_entry``, ...).
* ``log``: :class:`LedgerCore`, the Merkle tree over the entries, signed checkpoints,
  inclusion and consistency proofs.
* ``verifier``: ``LogVerifier``, which checks stored rows, and its :class:`VerifyReport`.
* ``transparency``: :func:`transparency_report` and :func:`render_report`.
* ``errors``: :class:`LedgerError` and :class:`EntryError`.
* ``store``: the SQLite file: :class:`Ledger`, :func:`verify`, :func:`report`.
* ``witnessing``: getting each checkpoint cosigned by the court's witness
  (``interceptor.witness``) and refusing a ledger behind what it cosigned.

This package exports what the rest of doormat uses; the modules' other public names
(``LogVerifier``, ``peek_checkpoint``, ``check_payload``, the file's ``FORMAT``, ...)
are imported from their module.
"""

from __future__ import annotations

from interceptor.ledger.entries import (
    ENTRY_TYPES,
    MAX_ENTRY_BYTES,
    OVERSIGHT,
    RECORD_DELIVERED,
    TASK_START,
    TASK_STOP,
    WARRANT_DECISION,
    Entry,
    make_entry,
    oversight_entry,
    parse_entry,
    record_delivered_entry,
    task_start_entry,
    task_stop_entry,
    warrant_decision_entry,
)
from interceptor.ledger.errors import EntryError, LedgerError
from interceptor.ledger.log import (
    DEFAULT_ORIGIN,
    ConsistencyProof,
    InclusionProof,
    LedgerCore,
    Receipt,
)
from interceptor.ledger.store import Ledger, LedgerFileError, report, verify
from interceptor.ledger.transparency import render_report, transparency_report
from interceptor.ledger.verifier import Problem, VerifyReport
from interceptor.ledger.witnessing import (
    LedgerRollbackError,
    WitnessError,
    Witnessing,
    witness_now,
)

__all__ = [
    "DEFAULT_ORIGIN",
    "ENTRY_TYPES",
    "MAX_ENTRY_BYTES",
    "OVERSIGHT",
    "RECORD_DELIVERED",
    "TASK_START",
    "TASK_STOP",
    "WARRANT_DECISION",
    "ConsistencyProof",
    "Entry",
    "EntryError",
    "InclusionProof",
    "Ledger",
    "LedgerCore",
    "LedgerError",
    "LedgerFileError",
    "LedgerRollbackError",
    "Problem",
    "Receipt",
    "VerifyReport",
    "WitnessError",
    "Witnessing",
    "make_entry",
    "oversight_entry",
    "parse_entry",
    "record_delivered_entry",
    "render_report",
    "report",
    "task_start_entry",
    "task_stop_entry",
    "transparency_report",
    "verify",
    "warrant_decision_entry",
    "witness_now",
]
