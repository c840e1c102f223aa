"""The scoped interceptor: warrants in (HI-1), tasks at the relay (X1), records out to the
agency (HI-2 IRI, HI-3 CC) - and the audit ledger written before each step.

``ScopedInterceptor`` is the protocol core: plain calls in, actions out, no asyncio. It
holds no key that opens a message: content reaches the agency only from a party that
legitimately holds one (an enterprise's disclosed archive, which checks the same warrant
itself), or as end-to-end ciphertext that nobody in the chain can read.

Log before act: every decision, task start and stop, and delivered record is appended to
the ledger (durable on return) before the action that it records is handed out. A crash
between the two leaves a ledger entry without its action, never an action without its
entry; ``reprovision`` (run on start) re-sends the X1 activation of every task the ledger
says is running, which the relay treats as a no-op if it already has it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from clients.crypto import seal_to
from interceptor.ledger import (
    TASK_START,
    TASK_STOP,
    WARRANT_DECISION,
    Ledger,
    record_delivered_entry,
    task_start_entry,
    task_stop_entry,
    warrant_decision_entry,
)
from wire import strictjson
from wire.envelope import MAX_ENVELOPE_BYTES
from wire.events import EventLog
from wire.ids import INTERCEPTOR_ID, enterprise_of
from wire.li.checks import Decision, Directory, Policy, WarrantState, check_warrant_bytes
from wire.li.errors import WarrantError
from wire.li.handover import HANDOVER_INFO, encode_record, handover_record
from wire.li.trust import AgencyPublicKey, TrustStore
from wire.li.warrant import Warrant, parse_warrant

ACTOR = INTERCEPTOR_ID
# An X3 record carries an envelope (at most MAX_ENVELOPE_BYTES) in base64, and metadata.
MAX_RELAY_RECORD = MAX_ENVELOPE_BYTES * 4 // 3 + 4096


@dataclass(frozen=True)
class SendX1:
    """An X1 request for the relay (``doormat/out/interceptor/x1``)."""

    request: dict[str, Any]


@dataclass(frozen=True)
class Deliver:
    """A sealed HI-2/HI-3 record for the agency."""

    sealed: bytes
    category: str


@dataclass(frozen=True)
class AskEnterprise:
    """Ask an enterprise for CC from its archive under this warrant (it checks it again)."""

    enterprise: str
    warrant: bytes


Action = SendX1 | Deliver | AskEnterprise


def task_id_of(warrant: Warrant) -> str:
    return f"{warrant.liid}.g{warrant.generation}"


class ScopedInterceptor:
    def __init__(
        self,
        ledger: Ledger,
        *,
        trust: TrustStore,
        policy: Policy,
        agency: AgencyPublicKey,
        directory: Directory,
        archives: Callable[[str], bool],
        events: EventLog,
        clock_ms: Callable[[], int],
    ) -> None:
        if agency.fingerprint != policy.agency_key_fingerprint:
            raise ValueError("the agency key is not the one the policy pins")
        self.ledger = ledger
        self.trust = trust
        self.policy = policy
        self.agency = agency
        self.directory = directory
        self.archives = archives  # does this enterprise run a disclosed archive?
        self.events = events
        self.clock_ms = clock_ms
        self.state = WarrantState()
        self.warrants: dict[str, tuple[bytes, Warrant]] = {}  # by authorisation id
        self.tasks: dict[str, dict[str, Any]] = {}  # running tasks, by task id
        self._sequence: dict[tuple[str, str], int] = {}  # (liid, category) -> last seq
        self._replay(e for e in ledger.entries())

    # -- restart ---------------------------------------------------------------------

    def _replay(self, entries: Iterable[Any]) -> None:
        """Rebuild what we know from the ledger alone: it is the source of truth."""
        for entry in entries:
            p = entry.payload
            if entry.type == WARRANT_DECISION and p.get("accepted"):
                fields = {k: v for k, v in p.items() if k not in ("categories", "targets")}
                self.state.apply(Decision.from_json({"type": WARRANT_DECISION, **fields}))
            elif entry.type == TASK_START:
                self.tasks[p["task_id"]] = p
            elif entry.type == TASK_STOP:
                self.tasks.pop(p["task_id"], None)
            elif entry.type == "record-delivered":
                key = (p["liid"], p["category"])
                self._sequence[key] = max(self._sequence.get(key, 0), p["sequence"])

    def reprovision(self) -> list[Action]:
        """X1 activations for every task the ledger says is running (after a restart)."""
        return [SendX1(self._activation(p)) for p in self.tasks.values()]

    # -- HI-1 --------------------------------------------------------------------------

    def intake(self, data: bytes) -> tuple[Decision, list[Action]]:
        now_ms = self.clock_ms()
        decision = check_warrant_bytes(
            data,
            trust=self.trust,
            policy=self.policy,
            state=self.state,
            now=now_ms // 1000,
            directory=self.directory,
        )
        try:
            warrant: Warrant | None = parse_warrant(data)
        except WarrantError:
            warrant = None
        if warrant is not None and warrant.digest != decision.digest:
            warrant = None
        # Log the decision first - refusals too: oversight must see what was attempted.
        self.ledger.append(warrant_decision_entry(decision, warrant), time_ms=now_ms)
        if not decision.accepted or warrant is None:
            self.events.emit(
                ACTOR,
                "interceptor.warrant_refused",
                reason=decision.reason,
                message=decision.message,
                authorisation_id=decision.authorisation_id,
            )
            return decision, []
        self.state.apply(decision)
        self.events.emit(
            ACTOR,
            "interceptor.warrant_accepted",
            action=decision.action,
            authorisation_id=warrant.authorisation_id,
            case_reference=warrant.case_reference,
            liid=warrant.liid,
            categories=list(warrant.categories),
            targets=[t.to_json() for t in warrant.targets],
        )
        actions: list[Action] = []
        previous = self.warrants.get(warrant.authorisation_id)
        if previous is not None:
            actions += self._stop(
                task_id_of(previous[1]),
                previous[1],
                "cancelled" if warrant.status == "cancelled" else "updated",
            )
        if warrant.status == "cancelled":
            self.warrants.pop(warrant.authorisation_id, None)
            return decision, actions
        self.warrants[warrant.authorisation_id] = (data, warrant)
        task_id = task_id_of(warrant)
        start = task_start_entry(task_id, warrant)
        self.ledger.append(start, time_ms=self.clock_ms())
        self.tasks[task_id] = start
        self.events.emit(ACTOR, "interceptor.task_started", task_id=task_id, liid=warrant.liid)
        actions.append(SendX1(self._activation(start)))
        if "CC" in warrant.categories:
            for ent in sorted({enterprise_of(t.value) for t in warrant.targets}):
                if self.archives(ent):
                    actions.append(AskEnterprise(ent, data))
        return decision, actions

    def _activation(self, start: dict[str, Any]) -> dict[str, Any]:
        return {
            "op": "activate",
            "task_id": start["task_id"],
            "liid": start["liid"],
            "targets": start["targets"],
            "categories": start["categories"],
            "not_before": start["not_before"],
            "not_after": start["not_after"],
        }

    def _stop(self, task_id: str, warrant: Warrant, reason: str) -> list[Action]:
        if task_id not in self.tasks:
            return []
        self.ledger.append(
            task_stop_entry(
                task_id,
                authorisation_id=warrant.authorisation_id,
                case_reference=warrant.case_reference,
                liid=warrant.liid,
                reason=reason,
            ),
            time_ms=self.clock_ms(),
        )
        del self.tasks[task_id]
        self.events.emit(ACTOR, "interceptor.task_stopped", task_id=task_id, reason=reason)
        return [SendX1({"op": "deactivate", "task_id": task_id})]

    def expire(self) -> list[Action]:
        """Stop tasks whose window has closed (the relay also ends them by itself)."""
        now_s = self.clock_ms() // 1000
        actions: list[Action] = []
        for _, warrant in list(self.warrants.values()):
            if now_s >= warrant.not_after:
                actions += self._stop(task_id_of(warrant), warrant, "expired")
        return actions

    # -- X2 / X3 from the relay, CC from an enterprise ------------------------------------

    def _case_of(self, task_id: str) -> dict[str, Any] | None:
        return self.tasks.get(task_id)

    def _next_sequence(self, liid: str, category: str) -> int:
        seq = self._sequence.get((liid, category), 0) + 1
        self._sequence[(liid, category)] = seq
        return seq

    def _logged(
        self,
        task: dict[str, Any],
        category: str,
        seq: int,
        sealed: bytes,
        source: str,
        plaintext: bool | None,
    ) -> Deliver:
        """Append the delivery to the ledger, then hand out the record: log before act."""
        self.ledger.append(
            record_delivered_entry(
                liid=task["liid"],
                case_reference=task["case_reference"],
                category=category,
                sequence=seq,
                delivered=sealed,
                plaintext=plaintext,
                source=source,
                task_id=task["task_id"],
            ),
            time_ms=self.clock_ms(),
        )
        self.events.emit(
            ACTOR,
            "interceptor.delivered",
            liid=task["liid"],
            category=category,
            sequence=seq,
            source=source,
            plaintext=plaintext,
        )
        return Deliver(sealed, category)

    def _deliver(
        self,
        task: dict[str, Any],
        category: str,
        record: dict[str, Any],
        source: str,
        plaintext: bool | None,
    ) -> Deliver:
        seq = self._next_sequence(task["liid"], category)
        record = handover_record(
            liid=task["liid"], category=category, sequence=seq, source=source, **record
        )
        sealed = seal_to(self.agency.public_key, encode_record(record), info=HANDOVER_INFO)
        return self._logged(task, category, seq, sealed, source, plaintext)

    def on_relay_record(self, kind: str, payload: bytes) -> list[Action]:
        """An X2 (IRI) or X3 (CC, ciphertext) record from the relay."""
        try:
            # Strict (wire/strictjson.py): no NaN/Infinity, no huge integer, no deep
            # nesting reaches the sealed HI-2/HI-3 record.
            rec = strictjson.loads_object(payload, "relay record", max_bytes=MAX_RELAY_RECORD)
            task = self._case_of(str(rec["task_id"]))
        except (ValueError, KeyError, TypeError):
            self.events.emit(ACTOR, "interceptor.rejected", reason="unreadable relay record")
            return []
        if task is None:
            # A record for a task we do not run (stopped, or never ours): not delivered.
            self.events.emit(ACTOR, "interceptor.rejected", reason="record for no running task")
            return []
        meta = {k: rec.get(k) for k in ("id", "from", "to", "ts", "size")}
        if kind == "x2":
            return [self._deliver(task, "IRI", meta, "relay", None)]
        if "envelope" in rec:
            return [
                self._deliver(task, "CC", {**meta, "envelope": rec["envelope"]}, "relay", False)
            ]
        return []

    def on_archive_export(
        self, enterprise: str, authorisation_id: str, sealed_records: list[bytes]
    ) -> list[Action]:
        """Content an enterprise exported from its archive under a warrant it checked
        itself, already sealed to the agency: the interceptor logs and forwards bytes it
        cannot read."""
        held = self.warrants.get(authorisation_id)
        task = None if held is None else self.tasks.get(task_id_of(held[1]))
        if task is None:
            self.events.emit(
                ACTOR,
                "interceptor.rejected",
                reason=f"archive export from {enterprise} for no running task",
            )
            return []
        source = f"archive:{enterprise}"
        return [
            self._logged(task, "CC", self._next_sequence(task["liid"], "CC"), sealed, source, True)
            for sealed in sealed_records
        ]
