"""The exercises engine: watches a system's events and marks exercises solved.

    engine = LabEngine(load_exercises(), ScoreStore(home))
    engine.attach(system.events)       # replays what is already logged, then listens
    engine.board()                     # the score board (JSON-ready)

It subscribes to the system's ``EventLog``; each active exercise has a fresh matcher
per attached log, so a fresh system (the dashboard's reset) starts every exercise's
progress over while the score already earned stays in the store. A solve is recorded
with its evidence: the event that completed the matcher (without plaintext fields).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from doormat.lab.matcher import Matcher
from doormat.lab.spec import Exercise, ExerciseSet
from doormat.lab.store import ScoreStore
from wire.events import Event, EventLog

# Fields never copied into a solve's evidence: plaintext and ciphertext excerpts.
_PRIVATE_FIELDS = {"text", "excerpt", "sample", "query"}

Listener = Callable[[dict[str, Any]], None]


class LabEngine:
    def __init__(self, exercises: ExerciseSet, store: ScoreStore) -> None:
        self.exercises = exercises
        self.store = store
        self._lock = threading.RLock()
        self._matchers: dict[str, Matcher] = {}
        self._generation = 0
        self._listeners: list[Listener] = []
        self._selection: list[str] | None = store.selection()

    # -- which exercises appear ---------------------------------------------------------

    def active(self) -> list[Exercise]:
        """The teacher's selection if there is one, else the file's ``enabled`` flags."""
        selection = self._selection
        if selection is None:
            return [e for e in self.exercises.exercises if e.enabled]
        chosen = set(selection)
        return [e for e in self.exercises.exercises if e.key in chosen]

    def refresh(self) -> None:
        """Pick up a selection changed by another process (``doormat lab select``)."""
        selection = self.store.selection()
        with self._lock:
            if selection != self._selection:
                self._selection = selection
                self._sync_matchers()

    def _sync_matchers(self) -> None:
        keys = {e.key for e in self.active()}
        for key in list(self._matchers):
            if key not in keys:
                del self._matchers[key]
        for e in self.active():
            if e.key not in self._matchers:
                self._matchers[e.key] = e.matcher()

    # -- events -------------------------------------------------------------------------

    def subscribe(self, listener: Listener) -> None:
        """``listener({"type": "solved", "key", "title", "points"})`` on each new solve."""
        self._listeners.append(listener)

    def attach(self, events: EventLog, replay: bool = True) -> None:
        """Watch ``events`` from now on (and, with ``replay``, what it already holds). A
        log attached earlier is no longer watched."""
        with self._lock:
            self._generation += 1
            generation = self._generation
            self._matchers = {}
            self._sync_matchers()

        def listener(event: Event) -> None:
            if generation == self._generation:
                self.feed(event)

        # Subscribe first, then replay a snapshot: an event emitted in between is seen
        # twice at worst, which only ever moves a matcher forward.
        events.subscribe(listener)
        if replay:
            for event in events.events():
                if generation != self._generation:
                    break
                self.feed(event)

    def feed(self, event: Event) -> list[str]:
        """Give one event to every active exercise's matcher; return newly solved keys."""
        solved: list[str] = []
        with self._lock:
            for key, matcher in self._matchers.items():
                if not matcher.feed(event):
                    continue
                matcher.reset()  # so a solve after a score reset is seen again
                evidence = {k: v for k, v in event.items() if k not in _PRIVATE_FIELDS}
                if self.store.mark_solved(key, evidence):
                    solved.append(key)
        for key in solved:
            ex = self.exercises.get(key)
            note = {"type": "solved", "key": key, "title": ex.title, "points": ex.points}
            for listener in list(self._listeners):
                listener(note)
        return solved

    # -- the score board ----------------------------------------------------------------

    def reveal_hint(self, key: str) -> list[str]:
        """Show one more hint of ``key``; return the hints shown so far."""
        ex = self._active_exercise(key)
        if not ex.hints:
            return []
        shown = self.store.show_hint(key, len(ex.hints))
        return list(ex.hints[:shown])

    def _active_exercise(self, key: str) -> Exercise:
        for e in self.active():
            if e.key == key:
                return e
        raise KeyError(f"no active exercise {key!r}")

    def reset_scores(self) -> None:
        with self._lock:
            self.store.reset()
            for m in self._matchers.values():
                m.reset()

    def board(self) -> dict[str, Any]:
        self.refresh()
        return board(self.exercises, self.store, self.active(), dict(self._matchers))


def board(
    exercises: ExerciseSet,
    store: ScoreStore,
    active: list[Exercise] | None = None,
    matchers: dict[str, Matcher] | None = None,
) -> dict[str, Any]:
    """The score board as JSON: what the dashboard's page and ``doormat lab status`` show."""
    if active is None:
        selection = store.selection()
        active = [e for e in exercises.exercises
                  if (e.enabled if selection is None else e.key in set(selection))]
    solved = store.solved()
    hints = store.hints_shown()
    rows = []
    for e in active:
        s = solved.get(e.key)
        m = (matchers or {}).get(e.key)
        done, steps = m.progress() if m is not None else (0, 1)
        shown = hints.get(e.key, 0)
        rows.append({
            "key": e.key,
            "title": e.title,
            "difficulty": e.difficulty,
            "points": e.points,
            "goal": e.goal,
            "instructions": e.instructions,
            "hints_total": len(e.hints),
            "hints": list(e.hints[:shown]),
            "solved": s is not None,
            "solved_ms": s.solved_ms if s else None,
            # How the check works is shown once solved: it explains the result.
            "detected_by": e.describe_solution() if s else None,
            "evidence": s.evidence if s else None,
            "progress": [steps if s else done, steps],
        })
    return {
        "source": exercises.source,
        "selection": store.selection(),
        "exercises": rows,
        "solved": sum(1 for r in rows if r["solved"]),
        "total": len(rows),
        "score": sum(r["points"] for r in rows if r["solved"]),
        "max_score": sum(r["points"] for r in rows),
    }
