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

The ledger is the source of truth after a restart: the warrant state, the running tasks,
and per authorisation its latest generation (``cases``, from its ``task-start`` entry) and
the enterprises it was served on (``served``) are rebuilt from it alone, so an amendment
or a cancellation accepted after a restart stops what it must and is served on every
enterprise that exports under an earlier generation.

With a witness (``interceptor.ledger.witnessing``), every batch of actions starts with a
``WitnessCheckpoint``: the service gets the ledger's new head cosigned by the court's
witness before it acts, and if it cannot, carries out only the stops and halts.
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
from interceptor.ledger.witnessing import Witnessing
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
    stop: bool = False  # a cancellation: it can only stop an export


@dataclass(frozen=True)
class WitnessCheckpoint:
    """Get the ledger's head cosigned by the witness before the actions that follow: if
    it cannot be, only stops are carried out and the interceptor halts."""


Action = SendX1 | Deliver | AskEnterprise | WitnessCheckpoint


class InterceptorHalted(RuntimeError):
    """The interceptor stopped acting: its ledger could not be witnessed (behind, or not
    consistent with, what the witness cosigned). It must be restarted on a good ledger."""


def is_stop(action: Action) -> bool:
    """An action that only ever stops interception: always safe to carry out."""
    if isinstance(action, SendX1):
        return action.request.get("op") == "deactivate"
    return isinstance(action, AskEnterprise) and action.stop


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
        witnessing: Witnessing | None = None,
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
        # With a witness, each new checkpoint is cosigned before anything is acted on
        # (``WitnessCheckpoint`` heads the actions); the service does the exchange.
        self.witnessing = witnessing
        self.halted: str | None = None
        self.state = WarrantState()
        # Per authorisation id, what the ledger says about its latest accepted
        # generation: that generation's task-start entry (targets, categories, window),
        # kept after the task stops. Amendments and cancellations are honoured from it.
        self.cases: dict[str, dict[str, Any]] = {}
        # Per authorisation id, the enterprises its warrants were served on (archiving
        # enterprises of a CC target, any generation): each later generation, and the
        # cancellation, is served on them too.
        self.served: dict[str, set[str]] = {}
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
                self._remember_case(p)
            elif entry.type == TASK_STOP:
                self.tasks.pop(p["task_id"], None)
            elif entry.type == "record-delivered":
                key = (p["liid"], p["category"])
                self._sequence[key] = max(self._sequence.get(key, 0), p["sequence"])

    def _remember_case(self, start: dict[str, Any]) -> set[str]:
        """Record a task start as its authorisation's latest generation; return the
        archiving enterprises this generation's CC reaches."""
        aid = start["authorisation_id"]
        self.cases[aid] = start
        reached: set[str] = set()
        if "CC" in start["categories"]:
            reached = {
                ent
                for ent in (enterprise_of(t["value"]) for t in start["targets"])
                if self.archives(ent)
            }
        self.served.setdefault(aid, set()).update(reached)
        return reached

    def reprovision(self) -> list[Action]:
        """X1 activations for every task the ledger says is running (after a restart):
        only once the witness has confirmed that the ledger is not behind what it
        cosigned (a rolled-back ledger would bring back a cancelled task)."""
        return self._witnessed([SendX1(self._activation(p)) for p in self.tasks.values()])

    def _witnessed(self, actions: list[Action]) -> list[Action]:
        return actions if self.witnessing is None else [WitnessCheckpoint(), *actions]

    def halt(self, reason: str) -> None:
        """Stop acting for good (until restarted): the ledger could not be witnessed."""
        if self.halted is None:
            self.halted = reason
            self.events.emit(ACTOR, "interceptor.halted", reason=reason)

    def _check_running(self) -> None:
        if self.halted is not None:
            raise InterceptorHalted(f"the interceptor has halted: {self.halted}")

    # -- HI-1 --------------------------------------------------------------------------

    def intake(self, data: bytes) -> tuple[Decision, list[Action]]:
        self._check_running()
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
            return decision, self._witnessed([])
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
        aid = warrant.authorisation_id
        previous = self.cases.get(aid)
        if previous is not None:
            actions += self._stop(
                previous["task_id"],
                previous,
                "cancelled" if warrant.status == "cancelled" else "updated",
            )
        # Every enterprise served an earlier generation is served this one too: an
        # amendment that drops CC or its targets, and a cancellation, must reach the
        # archive that still exports under the earlier one (it checks it itself).
        earlier = set(self.served.get(aid, ()))
        if warrant.status == "cancelled":
            actions += [AskEnterprise(ent, data, stop=True) for ent in sorted(earlier)]
            return decision, self._witnessed(actions)
        task_id = task_id_of(warrant)
        start = task_start_entry(task_id, warrant)
        self.ledger.append(start, time_ms=self.clock_ms())
        self.tasks[task_id] = start
        reached = self._remember_case(start)
        self.events.emit(ACTOR, "interceptor.task_started", task_id=task_id, liid=warrant.liid)
        actions.append(SendX1(self._activation(start)))
        actions += [AskEnterprise(ent, data) for ent in sorted(earlier | reached)]
        return decision, self._witnessed(actions)

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

    def _stop(self, task_id: str, case: dict[str, Any], reason: str) -> list[Action]:
        if task_id not in self.tasks:
            return []
        self.ledger.append(
            task_stop_entry(
                task_id,
                authorisation_id=case["authorisation_id"],
                case_reference=case["case_reference"],
                liid=case["liid"],
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
        for task in list(self.tasks.values()):
            if now_s >= task["not_after"]:
                actions += self._stop(task["task_id"], task, "expired")
        return actions

    # -- X2 / X3 from the relay, CC from an enterprise ------------------------------------

    def _case_of(self, task_id: str) -> dict[str, Any] | None:
        """The running task, if its window is open now (an expired task is stopped and
        logged here, so nothing is delivered under it however late it arrives)."""
        task = self.tasks.get(task_id)
        if task is None:
            return None
        if self.clock_ms() // 1000 >= task["not_after"]:
            self._stop(task_id, task, "expired")
            return None
        return task

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
        if self.halted is not None:
            self.events.emit(ACTOR, "interceptor.rejected", reason="halted: " + self.halted)
            return []
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
        if ("IRI" if kind == "x2" else "CC") not in task["categories"]:
            self.events.emit(
                ACTOR, "interceptor.rejected", reason="record of a category not collected"
            )
            return []
        meta = {k: rec.get(k) for k in ("id", "from", "to", "ts", "size")}
        if kind == "x2":
            return self._witnessed([self._deliver(task, "IRI", meta, "relay", None)])
        if "envelope" in rec:
            return self._witnessed(
                [self._deliver(task, "CC", {**meta, "envelope": rec["envelope"]}, "relay", False)]
            )
        return []

    def on_archive_export(
        self, enterprise: str, authorisation_id: str, sealed_records: list[bytes]
    ) -> list[Action]:
        """Content an enterprise exported from its archive under a warrant it checked
        itself, already sealed to the agency: the interceptor logs and forwards bytes it
        cannot read."""
        if self.halted is not None:
            self.events.emit(ACTOR, "interceptor.rejected", reason="halted: " + self.halted)
            return []
        case = self.cases.get(authorisation_id)
        task = None if case is None else self._case_of(case["task_id"])
        if task is not None and not (
            "CC" in task["categories"]
            and any(enterprise_of(t["value"]) == enterprise for t in task["targets"])
        ):
            task = None  # the running generation collects no CC from this enterprise
        if task is None:
            self.events.emit(
                ACTOR,
                "interceptor.rejected",
                reason=f"archive export from {enterprise} for no running task",
            )
            return []
        source = f"archive:{enterprise}"
        return self._witnessed(
            [
                self._logged(
                    task, "CC", self._next_sequence(task["liid"], "CC"), sealed, source, True
                )
                for sealed in sealed_records
            ]
        )
