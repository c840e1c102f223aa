"""The court's witness of the audit ledger: it keeps the latest checkpoint it cosigned
and refuses any checkpoint that is not consistent with it (https://c2sp.org/tlog-witness).

Why: the ledger's operator (the interceptor's side) can write its file. With only the
ledger's own signature, restoring an older copy, cutting entries off the end, or
rewriting everything and re-signing it with a new key all still "verify". The witness is
held by someone else (the court / oversight): once it has cosigned the ledger at size N,
a ledger with fewer entries, or with other entries in its first N, contradicts a
signature the operator cannot forge, and the interceptor refuses to act on it
(``interceptor.ledger.witnessing``) and ``doormat ledger verify`` names the rollback.

:class:`WitnessCore` is sans I/O: bytes in (an add-checkpoint request, ``wire.witness``),
a :class:`~wire.witness.WitnessResponse` and the state to persist out; no clock (``now``
is passed in), no files, no asyncio - so it can sit behind a direct call (the
one-process system), a control message, or HTTP. :class:`Witness` is its thin shell
with a state file, written atomically *before* the answer is released, as the spec
requires (otherwise a crash could cosign N+K and then forget it).

The state file (JSON, mode 0600)::

    {"v": 1,
     "logs": {"doormat.example/ledger": {"size": 18, "root": "<base64>", "time": 1764400000,
                                         "note": "<the checkpoint as cosigned>"}},
     "evidence": [{"origin": ..., "old_size": ..., "reason": ..., "time": ...,
                   "note": "<a log-signed checkpoint the witness refused>"}]}

``evidence`` keeps (at most 16, the latest) log-signed checkpoints that contradicted
what the witness had cosigned: signed proof that the log forked or went back.

What a witness does not do: it cannot tell a log's *first* checkpoint from a fake one
(nothing before it to be consistent with), it vouches only for the entries a checkpoint
it cosigned covers, and it is only as independent as whoever holds its key and its state
file (docs/threat-model.md).
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from infra.files import write_atomic
from wire.b64 import B64Error, b64decode, b64encode
from wire.checkpoint import CheckpointError, open_checkpoint
from wire.merkle import EMPTY_ROOT, ProofError, verify_consistency
from wire.note import InvalidSignatureError, NoteError, UnverifiedNoteError, Verifier
from wire.witness import (
    BAD_REQUEST,
    CONFLICT,
    FORBIDDEN,
    NOT_FOUND,
    OK,
    UNPROCESSABLE,
    AddCheckpoint,
    Cosigner,
    WitnessFormatError,
    WitnessResponse,
)

#: The witness's key name in its cosignatures.
DEFAULT_WITNESS_NAME = "doormat.example/court-witness"
_STATE_VERSION = 1
MAX_EVIDENCE = 16
MAX_STATE_BYTES = 16 * 1024 * 1024


class WitnessStateError(RuntimeError):
    """The witness's state file is unreadable: it will not start blank (a blank witness
    would cosign a rolled-back log)."""


@dataclass(frozen=True)
class Witnessed:
    """The latest checkpoint the witness cosigned for one log."""

    size: int
    root: bytes
    time: int  # the cosignature's timestamp
    note: str  # the checkpoint as cosigned: the log's signature and the witness's

    def to_json(self) -> dict[str, Any]:
        return {"size": self.size, "root": b64encode(self.root), "time": self.time,
                "note": self.note}


@dataclass(frozen=True)
class Evidence:
    """A log-signed checkpoint the witness refused: it contradicted what it cosigned."""

    origin: str
    old_size: int
    reason: str
    time: int
    note: str

    def to_json(self) -> dict[str, Any]:
        return {"origin": self.origin, "old_size": self.old_size, "reason": self.reason,
                "time": self.time, "note": self.note}


@dataclass(frozen=True)
class WitnessState:
    logs: Mapping[str, Witnessed]
    evidence: tuple[Evidence, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "v": _STATE_VERSION,
            "logs": {origin: w.to_json() for origin, w in sorted(self.logs.items())},
            "evidence": [e.to_json() for e in self.evidence],
        }

    def encode(self) -> bytes:
        return json.dumps(self.to_json(), indent=1, sort_keys=True).encode() + b"\n"

    @classmethod
    def from_json(cls, obj: object) -> WitnessState:
        try:
            if not isinstance(obj, dict) or obj.get("v") != _STATE_VERSION:
                raise ValueError("not a witness state of version 1")
            logs = {}
            for origin, w in obj["logs"].items():
                size, when, note = w["size"], w["time"], w["note"]
                if not (
                    isinstance(origin, str)
                    and isinstance(size, int)
                    and not isinstance(size, bool)
                    and size >= 0
                    and isinstance(when, int)
                    and isinstance(note, str)
                ):
                    raise ValueError(f"log {origin!r}: a field has the wrong type")
                logs[origin] = Witnessed(size, b64decode(w["root"], "root", length=32), when, note)
            evidence = tuple(
                Evidence(str(e["origin"]), int(e["old_size"]), str(e["reason"]), int(e["time"]),
                         str(e["note"]))
                for e in obj["evidence"]
            )
        except (KeyError, TypeError, ValueError, AttributeError, B64Error) as exc:
            raise WitnessStateError(f"unreadable witness state: {exc}") from None
        return cls(logs, evidence)

    @classmethod
    def parse(cls, data: bytes) -> WitnessState:
        if len(data) > MAX_STATE_BYTES:
            raise WitnessStateError("witness state file is too large")
        try:
            obj = json.loads(data)
        except ValueError as exc:
            raise WitnessStateError(f"unreadable witness state: {exc}") from None
        return cls.from_json(obj)


def _answer(status: int, reason: str, body: bytes | None = None) -> WitnessResponse:
    return WitnessResponse(status, body if body is not None else reason.encode() + b"\n", reason)


class WitnessCore:
    """The witness's rules, sans I/O. ``logs`` maps each origin it witnesses to the
    log's verifier key(s) it trusts; ``state`` is what it has cosigned so far.

    ``add_checkpoint(request, now=...)`` returns the answer and the new state, which the
    caller must persist before releasing an OK answer; ``commit(state)`` then makes it
    current. Call them under one lock (the check and the update are one step)."""

    def __init__(
        self,
        cosigner: Cosigner,
        logs: Mapping[str, Sequence[Verifier]],
        state: WitnessState | None = None,
    ) -> None:
        self.cosigner = cosigner
        self._logs = {origin: list(keys) for origin, keys in logs.items()}
        self.state = state if state is not None else WitnessState({})

    def latest(self, origin: str) -> Witnessed | None:
        return self.state.logs.get(origin)

    def commit(self, state: WitnessState) -> None:
        self.state = state

    def add_checkpoint(self, request: bytes, *, now: int) -> tuple[WitnessResponse, WitnessState]:
        try:
            req = AddCheckpoint.parse(request)
        except WitnessFormatError as exc:
            return _answer(BAD_REQUEST, f"malformed request: {exc}"), self.state
        try:
            text = req.checkpoint.decode("utf-8")
        except UnicodeDecodeError:
            return _answer(BAD_REQUEST, "the checkpoint is not UTF-8"), self.state
        origin = text.split("\n", 1)[0]
        keys = self._logs.get(origin)
        if keys is None:
            return _answer(NOT_FOUND, f"this witness does not witness {origin[:80]!r}"), self.state
        try:
            checkpoint = open_checkpoint(text, keys, origin=origin).checkpoint
        except CheckpointError as exc:
            cause = exc.__cause__
            if isinstance(cause, InvalidSignatureError | UnverifiedNoteError):
                return _answer(
                    FORBIDDEN,
                    f"the checkpoint is not signed by a key this witness trusts for {origin!r}",
                ), self.state
            if isinstance(cause, NoteError) or cause is None:
                return _answer(BAD_REQUEST, f"not a valid checkpoint: {exc}"), self.state
            return _answer(FORBIDDEN, str(exc)), self.state
        if req.old_size > checkpoint.size:
            return _answer(
                BAD_REQUEST,
                f"old size {req.old_size} is larger than the checkpoint's {checkpoint.size}",
            ), self.state
        if req.old_size == 0 and req.proof:
            return _answer(BAD_REQUEST, "a proof must be empty from old size 0"), self.state
        held = self.state.logs.get(origin)
        held_size = 0 if held is None else held.size
        if req.old_size != held_size:
            return _answer(
                CONFLICT,
                f"this witness last cosigned size {held_size} of {origin!r}, not {req.old_size}",
                f"{held_size}\n".encode(),
            ), self.state
        held_root = EMPTY_ROOT if held is None else held.root
        if held is not None and checkpoint.size == held.size and checkpoint.root != held.root:
            reason = (
                f"size {held.size} was cosigned with another root: the log forked or was "
                "rewritten"
            )
            return _answer(CONFLICT, reason, f"{held.size}\n".encode()), self._evidence(
                origin, req.old_size, reason, now, text
            )
        try:
            verify_consistency(
                req.old_size, checkpoint.size, list(req.proof), held_root, checkpoint.root
            )
        except ProofError as exc:
            reason = (
                f"size {checkpoint.size} is not consistent with size {held_size}, which this "
                f"witness cosigned: the log was rewritten or rolled back ({exc.reason})"
            )
            return _answer(UNPROCESSABLE, reason), self._evidence(
                origin, req.old_size, reason, now, text
            )
        line = self.cosigner.cosign(checkpoint.body(), now)
        note = text + line
        logs = dict(self.state.logs)
        logs[origin] = Witnessed(checkpoint.size, checkpoint.root, now, note)
        return (
            WitnessResponse(OK, line.encode(), f"cosigned {origin} at size {checkpoint.size}"),
            replace(self.state, logs=logs),
        )

    def _evidence(
        self, origin: str, old_size: int, reason: str, now: int, note: str
    ) -> WitnessState:
        kept = (*self.state.evidence, Evidence(origin, old_size, reason, now, note))
        return replace(self.state, evidence=kept[-MAX_EVIDENCE:])


class Witness:
    """The witness with its state file: ``add_checkpoint(request) -> WitnessResponse``
    (plain bytes in, a plain answer out), persisted before it answers."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        cosigner: Cosigner,
        logs: Mapping[str, Sequence[Verifier]],
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.path = Path(path)
        self._clock = clock
        self._lock = threading.Lock()
        state = None
        if self.path.exists():
            try:
                state = WitnessState.parse(self.path.read_bytes())
            except OSError as exc:
                raise WitnessStateError(f"cannot read {self.path}: {exc}") from None
            except WitnessStateError as exc:
                raise WitnessStateError(f"{self.path}: {exc}; the witness will not start") from None
        self.core = WitnessCore(cosigner, logs, state)

    @property
    def verifier(self) -> Verifier:
        return self.core.cosigner.verifier()

    def add_checkpoint(self, request: bytes) -> WitnessResponse:
        with self._lock:
            response, state = self.core.add_checkpoint(request, now=int(self._clock()))
            if state is not self.core.state:
                write_atomic(self.path, state.encode(), private=True, make_parents=True)
                self.core.commit(state)
            return response

    def latest(self, origin: str) -> bytes | None:
        """The latest checkpoint it cosigned for ``origin``, with its cosignature."""
        with self._lock:
            held = self.core.latest(origin)
        return None if held is None else held.note.encode()



__all__ = [
    "DEFAULT_WITNESS_NAME",
    "Evidence",
    "Witness",
    "WitnessCore",
    "WitnessState",
    "WitnessStateError",
    "Witnessed",
]
