"""Declarative matchers over the system's events: what solves an exercise.

A matcher is built from the ``solved_by`` part of an exercise (see ``doormat.lab.spec``
for the grammar and its validation) and fed every event in order. It never looks at
anything but events, so an exercise is solved by what the system did, never by what a
student says.

* ``Step``: events of one kind whose fields meet conditions; done after ``count`` such
  events (or ``count`` distinct values of one field, with ``distinct``).
* ``Sequence``: steps in order; an event only counts towards the current step, and
  only after the previous step was done.
* ``AllOf`` / ``AnyOf``: every / any one of several matchers, each fed independently.

Conditions on a field: a plain value (equality; ``true`` never equals ``1``) or one
operator: ``eq``, ``ne``, ``in``, ``not_in``, ``gt``, ``gte``, ``lt``, ``lte``,
``contains`` (a substring of a string, or a member of a list), ``startswith``,
``exists`` (true/false). A field is a path: ``a.b`` (nested object), ``targets.0.value``
(a list element), ``targets.*.value`` (any element: the condition holds if it holds for
one of them).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from wire.events import Event

OPERATORS = ("eq", "ne", "in", "not_in", "gt", "gte", "lt", "lte", "contains", "startswith",
             "exists")

_MISSING = object()


def field_values(event: Mapping[str, Any], path: str) -> list[Any]:
    """The values a field path names in an event: ``a.b`` reaches into a nested object,
    a number into a list, ``*`` into every element of a list. Empty if absent."""
    current: list[Any] = [event]
    for part in path.split("."):
        nxt: list[Any] = []
        for cur in current:
            if isinstance(cur, Mapping):
                if part in cur:
                    nxt.append(cur[part])
            elif isinstance(cur, list | tuple):
                if part == "*":
                    nxt.extend(cur)
                elif part.isdigit() and int(part) < len(cur):
                    nxt.append(cur[int(part)])
        current = nxt
    return current


def field_value(event: Mapping[str, Any], path: str) -> Any:
    """The first value a field path names, or _MISSING."""
    values = field_values(event, path)
    return values[0] if values else _MISSING


def _same(a: Any, b: Any) -> bool:
    # bool is an int in Python; in a condition true must not match 1.
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    return bool(a == b)


def _number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


@dataclass(frozen=True)
class Condition:
    op: str
    value: Any

    def test_all(self, values: list[Any]) -> bool:
        """True if the condition holds for any of the values a path named (a path
        without ``*`` names at most one)."""
        if self.op == "exists":
            return bool(values) == bool(self.value)
        if not values:
            return self.op in ("ne", "not_in")
        return any(self.test(v) for v in values)

    def test(self, actual: Any) -> bool:
        op, want = self.op, self.value
        if op == "exists":
            return (actual is not _MISSING) == bool(want)
        if actual is _MISSING:
            return op in ("ne", "not_in")
        if op == "eq":
            return _same(actual, want)
        if op == "ne":
            return not _same(actual, want)
        if op == "in":
            return any(_same(actual, w) for w in want)
        if op == "not_in":
            return not any(_same(actual, w) for w in want)
        if op in ("gt", "gte", "lt", "lte"):
            if not _number(actual):
                return False
            return bool({
                "gt": actual > want,
                "gte": actual >= want,
                "lt": actual < want,
                "lte": actual <= want,
            }[op])
        if op == "contains":
            if isinstance(actual, str):
                return isinstance(want, str) and want in actual
            if isinstance(actual, list | tuple):
                return any(_same(a, want) for a in actual)
            return False
        if op == "startswith":
            return isinstance(actual, str) and actual.startswith(want)
        raise ValueError(f"unknown operator {op!r}")  # the spec refuses these first

    def describe(self) -> str:
        v = json.dumps(self.value)
        return {
            "eq": f"= {v}", "ne": f"≠ {v}", "in": f"in {v}", "not_in": f"not in {v}",
            "gt": f"> {v}", "gte": f"≥ {v}", "lt": f"< {v}", "lte": f"≤ {v}",
            "contains": f"contains {v}", "startswith": f"starts with {v}",
            "exists": "present" if self.value else "absent",
        }[self.op]


class Matcher:
    def feed(self, event: Event) -> bool:
        """Take one event; True once the matcher is satisfied."""
        raise NotImplementedError

    @property
    def done(self) -> bool:
        raise NotImplementedError

    def reset(self) -> None:
        raise NotImplementedError

    def progress(self) -> tuple[int, int]:
        """(steps done, steps in all): shown on the score board."""
        raise NotImplementedError

    def describe(self) -> str:
        raise NotImplementedError


@dataclass
class Step(Matcher):
    kind: str
    where: dict[str, Condition] = field(default_factory=dict)
    count: int = 1
    distinct: str | None = None
    _n: int = 0
    _seen: set[str] = field(default_factory=set)

    def matches(self, event: Event) -> bool:
        if event.get("kind") != self.kind:
            return False
        return all(c.test_all(field_values(event, f)) for f, c in self.where.items())

    def feed(self, event: Event) -> bool:
        if self.done:
            return True
        if self.matches(event):
            if self.distinct is None:
                self._n += 1
            else:
                for v in field_values(event, self.distinct):
                    self._seen.add(json.dumps(v, sort_keys=True, default=str))
        return self.done

    @property
    def done(self) -> bool:
        return (len(self._seen) if self.distinct else self._n) >= self.count

    def reset(self) -> None:
        self._n = 0
        self._seen = set()

    def progress(self) -> tuple[int, int]:
        return (1 if self.done else 0, 1)

    def describe(self) -> str:
        text = self.kind
        if self.where:
            text += " with " + ", ".join(f"{f} {c.describe()}" for f, c in self.where.items())
        if self.distinct:
            text += f" ({self.count} different {self.distinct})"
        elif self.count > 1:
            text += f" (at least {self.count})"
        return text


@dataclass
class SequenceOf(Matcher):
    steps: list[Matcher]
    _i: int = 0

    def feed(self, event: Event) -> bool:
        if self.done:
            return True
        if self.steps[self._i].feed(event):
            self._i += 1
        return self.done

    @property
    def done(self) -> bool:
        return self._i >= len(self.steps)

    def reset(self) -> None:
        self._i = 0
        for s in self.steps:
            s.reset()

    def progress(self) -> tuple[int, int]:
        return (self._i, len(self.steps))

    def describe(self) -> str:
        return " then ".join(s.describe() for s in self.steps)


@dataclass
class AllOf(Matcher):
    parts: list[Matcher]

    def feed(self, event: Event) -> bool:
        for p in self.parts:
            if not p.done:
                p.feed(event)
        return self.done

    @property
    def done(self) -> bool:
        return all(p.done for p in self.parts)

    def reset(self) -> None:
        for p in self.parts:
            p.reset()

    def progress(self) -> tuple[int, int]:
        return (sum(1 for p in self.parts if p.done), len(self.parts))

    def describe(self) -> str:
        return "all of: " + "; ".join(p.describe() for p in self.parts)


@dataclass
class AnyOf(Matcher):
    parts: list[Matcher]

    def feed(self, event: Event) -> bool:
        for p in self.parts:
            p.feed(event)
        return self.done

    @property
    def done(self) -> bool:
        return any(p.done for p in self.parts)

    def reset(self) -> None:
        for p in self.parts:
            p.reset()

    def progress(self) -> tuple[int, int]:
        return (1 if self.done else 0, 1)

    def describe(self) -> str:
        return "any of: " + "; ".join(p.describe() for p in self.parts)


def replay(matcher: Matcher, events: Sequence[Event]) -> bool:
    """Feed a list of events; True if the matcher is satisfied by the end."""
    for e in events:
        if matcher.feed(e):
            return True
    return matcher.done
