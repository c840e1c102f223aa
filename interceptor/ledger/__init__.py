"""The audit ledger (interceptor/ledger.py, being split by concern into this package)."""

from interceptor.ledger.entries import (
    ENTRY_TYPES,
    FORMAT,
    MAX_ENTRY_BYTES,
    OVERSIGHT,
    RECORD_DELIVERED,
    TASK_START,
    TASK_STOP,
    WARRANT_DECISION,
    Entry,
    check_payload,
    make_entry,
    oversight_entry,
    parse_entry,
    record_delivered_entry,
    task_start_entry,
    task_stop_entry,
    warrant_decision_entry,
)
from interceptor.ledger.errors import (
    EntryError,
    LedgerError,
)
from interceptor.ledger.log import (
    DEFAULT_ORIGIN,
    ConsistencyProof,
    InclusionProof,
    LedgerCore,
    PreparedEntry,
    Receipt,
)
from interceptor.ledger.transparency import (
    render_report,
    transparency_report,
)
from interceptor.ledger.verifier import (
    LogVerifier,
    Problem,
    VerifyReport,
    peek_checkpoint,
)

__all__ = [
    "DEFAULT_ORIGIN",
    "ENTRY_TYPES",
    "FORMAT",
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
    "LedgerCore",
    "LedgerError",
    "LogVerifier",
    "PreparedEntry",
    "Problem",
    "Receipt",
    "VerifyReport",
    "check_payload",
    "make_entry",
    "oversight_entry",
    "parse_entry",
    "peek_checkpoint",
    "record_delivered_entry",
    "render_report",
    "task_start_entry",
    "task_stop_entry",
    "transparency_report",
    "warrant_decision_entry",
]
