"""The relay's lawful-intercept switch: ``off``, ``scoped`` or ``blanket``.

This is the only place a tap can be attached, and it sees exactly what the relay sees:
the envelope bytes it accepted and their metadata. It has no key and no way to get one
(the relay imports no decryption code), so what a tap can read depends entirely on what
the *clients* put in the envelope - which is the lab's point.

* ``off``: nothing leaves the relay.
* ``blanket``: every accepted envelope is mirrored, with a metadata record, to the tap's
  inbox ``doormat/in/tap/mirror`` (QoS 1, so the broker queues it while the tap is away).
* ``scoped``: only what a warrant's tasks select. The scoped interceptor (account
  ``interceptor``) provisions tasks over X1 (ETSI TS 103 221-1 style: activate /
  deactivate by task id); for each accepted envelope that a live task's targets sent or
  received inside its window, the relay sends the interceptor an X2 record (IRI: the
  metadata) and, for CC tasks, an X3 record (the envelope bytes - ciphertext, which is
  all the relay has). Nothing else leaves. Tasks end by themselves at ``not_after``.

The mirror record (JSON): ``{"liid", "seq", "t", "id", "from", "to", "size", "bucket",
"envelope": base64}`` - the envelope exactly as the relay accepted it.

X1 requests on ``doormat/out/interceptor/x1`` (answers on ``doormat/in/interceptor/x1``):
``{"op": "activate", "task_id", "liid", "targets": [{"format": "device"|"user",
"value"}], "categories": ["IRI", "CC"], "not_before", "not_after"}`` (seconds) and
``{"op": "deactivate", "task_id"}``. Activating a task id again with the same fields is
harmless (the interceptor re-provisions after a restart).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from infra.sqlite import connect
from relay.router import ACTOR, Action, Publish
from wire import strictjson, topics
from wire.b64 import b64encode
from wire.envelope import Envelope
from wire.events import EventLog, now_ms
from wire.ids import INTERCEPTOR_ID, TAP_ID, USER_RE, is_device, user_of

Mode = Literal["off", "scoped", "blanket"]
MODES: tuple[Mode, ...] = ("off", "scoped", "blanket")

MIRROR_TOPIC = topics.inbox(TAP_ID, "mirror")
BLANKET_LIID = "BLANKET"
MAX_TARGETS = 10
# Task windows are Unix seconds; beyond 2**40 (the year 36812) is not a date but an attack
# on whatever computes with it.
MAX_TASK_SECONDS = 2**40
_TASK_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS li_tasks (
    task_id TEXT PRIMARY KEY, spec TEXT NOT NULL, active INTEGER NOT NULL,
    records INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS li_switch (
    one INTEGER PRIMARY KEY CHECK (one = 1), mode TEXT NOT NULL, set_by TEXT NOT NULL);
"""


class TaskError(ValueError):
    """An X1 request the relay refuses; the message says why."""


@dataclass(frozen=True)
class Task:
    task_id: str
    liid: str
    targets: tuple[tuple[str, str], ...]  # (format, value): exact devices or users
    categories: frozenset[str]
    not_before: int  # seconds
    not_after: int

    def matches(self, env: Envelope) -> bool:
        for fmt, value in self.targets:
            if fmt == "device" and value in (env.sender, env.recipient):
                return True
            if fmt == "user" and value in (user_of(env.sender), user_of(env.recipient)):
                return True
        return False

    def live(self, now_s: int) -> bool:
        return self.not_before <= now_s < self.not_after

    def to_json(self) -> dict[str, Any]:
        return {
            "task_id": self.task_id,
            "liid": self.liid,
            "targets": [{"format": f, "value": v} for f, v in self.targets],
            "categories": sorted(self.categories),
            "not_before": self.not_before,
            "not_after": self.not_after,
        }


def parse_task(obj: Any) -> Task:
    """An X1 activation, checked as strictly as anything from outside."""
    if not isinstance(obj, dict):
        raise TaskError("task must be an object")
    want = {"op", "task_id", "liid", "targets", "categories", "not_before", "not_after"}
    if set(obj) != want:
        raise TaskError(f"task fields must be exactly {sorted(want)}")
    task_id, liid = obj["task_id"], obj["liid"]
    if not isinstance(task_id, str) or not _TASK_ID.match(task_id):
        raise TaskError("bad task_id")
    if not isinstance(liid, str) or not _TASK_ID.match(liid):
        raise TaskError("bad liid")
    targets = obj["targets"]
    if not isinstance(targets, list) or not 1 <= len(targets) <= MAX_TARGETS:
        raise TaskError(f"a task names 1 to {MAX_TARGETS} exact targets")
    parsed: list[tuple[str, str]] = []
    for t in targets:
        if not isinstance(t, dict) or set(t) != {"format", "value"}:
            raise TaskError("a target is {format, value}")
        fmt, value = t["format"], t["value"]
        # Exact ids only: the id grammar has no wildcard characters.
        exact_device = fmt == "device" and is_device(value)
        exact_user = fmt == "user" and isinstance(value, str) and USER_RE.fullmatch(value)
        if exact_device or exact_user:
            parsed.append((fmt, value))
        else:
            raise TaskError(f"not an exact {fmt!s} target: {value!r}")
    cats = obj["categories"]
    if (
        not isinstance(cats, list)
        or not cats
        or not all(isinstance(c, str) for c in cats)
        or not set(cats) <= {"IRI", "CC"}
    ):
        raise TaskError("categories must be a non-empty subset of IRI, CC")
    nb, na = obj["not_before"], obj["not_after"]
    if (
        not all(isinstance(x, int) and not isinstance(x, bool) for x in (nb, na))
        or not 0 <= nb < na <= MAX_TASK_SECONDS
    ):
        raise TaskError(f"0 <= not_before < not_after <= {MAX_TASK_SECONDS}, integer seconds")
    return Task(task_id, liid, tuple(parsed), frozenset(cats), nb, na)


class LawfulIntercept:
    """A relay Observer: decides, per accepted envelope, what (if anything) the tap gets."""

    def __init__(
        self,
        events: EventLog,
        mode: str = "off",
        clock: Callable[[], int] = now_ms,
        db_path: str | Path | None = None,
    ) -> None:
        self._events = events
        self._clock = clock
        self.mode: Mode = "off"
        self.set_mode(mode)
        # Tasks survive a relay restart: they live in the relay's database (its store
        # has set it up; this is a second connection to it, in autocommit mode).
        self._db = connect(db_path or ":memory:", wal=False)
        self._db.executescript(_SCHEMA)
        self.tasks: dict[str, Task] = {}
        for spec, active in self._db.execute("SELECT spec, active FROM li_tasks"):
            if active:
                task = parse_task({"op": "activate", **json.loads(spec)})
                self.tasks[task.task_id] = task

    def close(self) -> None:
        self._db.close()

    # -- X1 -------------------------------------------------------------------------

    def handle_x1(self, owner: str, payload: bytes) -> Sequence[Action]:
        """Task administration from the interceptor account, answered on its x1 inbox."""
        answer: dict[str, Any]
        try:
            if owner != INTERCEPTOR_ID:
                raise TaskError("only the interceptor provisions tasks")
            if len(payload) > 8192:
                raise TaskError("X1 request must be a JSON object of at most 8 KiB")
            # Strict (wire/strictjson.py): a StrictJSONError is a ValueError.
            obj = strictjson.loads_object(payload, "X1 request", max_bytes=8192)
            op = obj.get("op")
            if op == "activate":
                task = parse_task(obj)
                self._activate(task)
                answer = {"ok": True, "op": op, "task_id": task.task_id}
            elif op == "deactivate":
                task_id = obj.get("task_id")
                if not isinstance(task_id, str):
                    raise TaskError("deactivate needs a task_id")
                self._deactivate(task_id, "deactivated")
                answer = {"ok": True, "op": op, "task_id": task_id}
            else:
                raise TaskError(f"unknown X1 op {op!r}")
        except (TaskError, ValueError) as exc:
            self._events.emit(ACTOR, "relay.x1_refused", owner=owner, reason=str(exc))
            answer = {"ok": False, "error": str(exc)}
        if owner != INTERCEPTOR_ID:
            return ()  # answer nobody who is not the interceptor
        return (Publish(topics.inbox(INTERCEPTOR_ID, topics.X1), json.dumps(answer).encode()),)

    def _activate(self, task: Task) -> None:
        spec = json.dumps(task.to_json(), sort_keys=True)
        self._db.execute(
            "INSERT INTO li_tasks (task_id, spec, active) VALUES (?, ?, 1)"
            " ON CONFLICT (task_id) DO UPDATE SET spec = excluded.spec, active = 1",
            (task.task_id, spec),
        )
        self.tasks[task.task_id] = task
        self._events.emit(ACTOR, "relay.task_started", **task.to_json())

    def _deactivate(self, task_id: str, reason: str) -> None:
        self._db.execute("UPDATE li_tasks SET active = 0 WHERE task_id = ?", (task_id,))
        if self.tasks.pop(task_id, None) is not None:
            self._events.emit(ACTOR, "relay.task_ended", task_id=task_id, reason=reason)

    def set_mode(self, mode: str, *, by: str | None = None) -> None:
        """Flip the switch. ``by``: the account that gave the control (the operator's
        console): then the position is persisted in the relay's database, and a relay
        started again on it comes back in that position (``restore``)."""
        if mode not in MODES:
            raise ValueError(f"unknown LI mode {mode!r}: use one of {', '.join(MODES)}")
        if mode != self.mode:
            fields: dict[str, Any] = {"mode": mode, "previous": self.mode}
            if by is not None:
                fields["by"] = by
            self._events.emit(ACTOR, "relay.li_mode", **fields)
        self.mode = mode
        if by is not None:
            self._db.execute(
                "INSERT INTO li_switch (one, mode, set_by) VALUES (1, ?, ?)"
                " ON CONFLICT (one) DO UPDATE SET mode = excluded.mode, set_by = excluded.set_by",
                (mode, by),
            )

    def restore(self) -> None:
        """Take the position the operator last set by control (if any): it wins over the
        one the relay was started with."""
        row = self._db.execute("SELECT mode, set_by FROM li_switch").fetchone()
        if row is not None and row[0] in MODES and row[0] != self.mode:
            self._events.emit(ACTOR, "relay.li_mode", mode=row[0], previous=self.mode,
                              by=row[1], restored=True)
            self.mode = row[0]

    def on_accepted(self, envelope: Envelope, raw: bytes, seq: int) -> Sequence[Action]:
        if self.mode == "scoped":
            return self._scoped(envelope, raw)
        if self.mode != "blanket":
            return ()
        record = {
            "liid": BLANKET_LIID,
            "seq": seq,
            "t": self._clock(),
            "id": envelope.id,
            "from": envelope.sender,
            "to": envelope.recipient,
            "size": len(raw),
            "bucket": len(envelope.body),
            "envelope": b64encode(raw),
        }
        self._events.emit(
            ACTOR,
            "relay.mirrored",
            liid=BLANKET_LIID,
            seq=seq,
            id=envelope.id,
            to=envelope.recipient,
            **{"from": envelope.sender},
        )
        return (Publish(MIRROR_TOPIC, json.dumps(record, separators=(",", ":")).encode()),)

    def _scoped(self, env: Envelope, raw: bytes) -> list[Action]:
        now_s = self._clock() // 1000
        out: list[Action] = []
        for task in list(self.tasks.values()):
            if now_s >= task.not_after:
                self._deactivate(task.task_id, "expired")
                continue
            if not task.live(now_s) or not task.matches(env):
                continue
            (n,) = self._db.execute(
                "UPDATE li_tasks SET records = records + 1 WHERE task_id = ? RETURNING records",
                (task.task_id,),
            ).fetchone()
            meta = {
                "liid": task.liid,
                "task_id": task.task_id,
                "seq": n,
                "t": self._clock(),
                "id": env.id,
                "from": env.sender,
                "to": env.recipient,
                "ts": env.ts,
                "size": len(raw),
                "bucket": len(env.body),
            }
            if "IRI" in task.categories:
                out.append(Publish(topics.inbox(INTERCEPTOR_ID, topics.X2), _dumps(meta)))
            if "CC" in task.categories:
                cc = {**meta, "envelope": b64encode(raw)}
                out.append(Publish(topics.inbox(INTERCEPTOR_ID, topics.X3), _dumps(cc)))
            self._events.emit(
                ACTOR, "relay.task_record", liid=task.liid, task_id=task.task_id, seq=n,
                id=env.id, to=env.recipient, categories=sorted(task.categories),
                **{"from": env.sender},
            )
        return out


def _dumps(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()
