"""The exercises file (YAML): strict parsing with errors that say where and what.

The file is outside input (a teacher writes their own), so it is checked completely
before anything runs, and every problem is reported at once with its place in the file
(``line 42, exercises[3] 'escrow-cost' solved_by.sequence[1].where.readable: ...``).

    version: 1
    exercises:
      - key: blanket-no-plaintext          # a-z, 0-9 and '-', 2-40 characters, unique
        title: Blanket, and still nothing
        difficulty: 1                      # 1, 2 or 3
        goal: what the student learns      # one or two sentences
        instructions: what to do           # the student's task
        hints: [first, second, third]      # at most three, shown one at a time
        enabled: true                      # optional (default true): does it appear?
        solved_by:                         # a matcher over the system's events
          sequence:
            - event: relay.li_mode
              where: {mode: blanket}
            - event: tap.captured
              where: {readable: false}
              count: 2

A matcher is one of

* a step: ``event`` (an event kind: one that some part of doormat emits, as listed in
  ``wire/event_kinds.py``; any other would never be seen, so it is refused), optional
  ``where`` (field -> condition), ``count`` (at least N such events, default 1),
  ``distinct`` (count distinct values of this field instead);
* ``sequence: [matcher, ...]`` (in order), ``all: [...]`` (every one, any order),
  ``any: [...]`` (at least one).

A condition is a plain value (equality) or a mapping with exactly one operator:
``eq ne in not_in gt gte lt lte contains startswith exists``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from doormat.lab.matcher import OPERATORS, AllOf, AnyOf, Condition, Matcher, SequenceOf, Step
from wire import event_kinds

KEY_RE = re.compile(r"^[a-z0-9][a-z0-9-]{1,39}$")
KIND_RE = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$")
FIELD_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.([A-Za-z_][A-Za-z0-9_]*|[0-9]{1,4}|\*))*$")
MAX_FILE_BYTES = 1 << 20
MAX_HINTS = 3
MAX_DEPTH = 6
EXERCISE_FIELDS = {
    "key", "title", "difficulty", "goal", "instructions", "hints", "solved_by", "enabled",
}
REQUIRED_FIELDS = ("key", "title", "difficulty", "goal", "instructions", "solved_by")
STEP_FIELDS = {"event", "where", "count", "distinct"}
COMBINATORS = ("sequence", "all", "any")


class ExerciseFileError(Exception):
    """The exercises file is not valid. ``problems`` lists every problem found."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = problems
        shown = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"{source}: {len(problems)} problem(s):\n{shown}")


@dataclass(frozen=True)
class Exercise:
    key: str
    title: str
    difficulty: int
    goal: str
    instructions: str
    hints: tuple[str, ...]
    enabled: bool
    solved_by: Any = field(repr=False)  # the validated YAML of the matcher
    build: Callable[[], Matcher] = field(repr=False, compare=False, default=lambda: AnyOf([]))

    def matcher(self) -> Matcher:
        """A fresh matcher (matchers keep state)."""
        return self.build()

    @property
    def points(self) -> int:
        return 10 * self.difficulty

    def describe_solution(self) -> str:
        return self.matcher().describe()


@dataclass(frozen=True)
class ExerciseSet:
    source: str
    exercises: tuple[Exercise, ...]

    def keys(self) -> list[str]:
        return [e.key for e in self.exercises]

    def __contains__(self, key: object) -> bool:
        return any(e.key == key for e in self.exercises)

    def get(self, key: str) -> Exercise:
        for e in self.exercises:
            if e.key == key:
                return e
        raise KeyError(key)


# -- YAML with line numbers, no duplicate keys, no aliases ------------------------------


class _Map(dict[str, Any]):
    line: int = 0


class _List(list[Any]):
    line: int = 0
    lines: list[int]


class _Loader(yaml.SafeLoader):
    # ``index`` is typed int in the stubs, but PyYAML passes a mapping's key node too.
    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        if self.check_event(yaml.AliasEvent):
            # types-PyYAML leaves Parser.peek_event unannotated: its event is Any here.
            event = self.peek_event()  # type: ignore[no-untyped-call]
            raise yaml.composer.ComposerError(
                None, None, "aliases (*name) are not allowed in an exercises file",
                event.start_mark,
            )
        return super().compose_node(parent, index)


def _construct_map(loader: _Loader, node: yaml.MappingNode) -> _Map:
    out = _Map()
    out.line = node.start_mark.line + 1
    dups = []
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        if not isinstance(key, str):
            raise yaml.constructor.ConstructorError(
                None, None, f"a key must be text, got {key!r}", key_node.start_mark
            )
        if key in out:
            dups.append((key, key_node.start_mark.line + 1))
        out[key] = loader.construct_object(value_node, deep=True)
    if dups:
        key, line = dups[0]
        raise yaml.constructor.ConstructorError(
            None, None, f"line {line}: the key {key!r} appears twice in one mapping", None
        )
    return out


def _construct_seq(loader: _Loader, node: yaml.SequenceNode) -> _List:
    out = _List(loader.construct_object(n, deep=True) for n in node.value)
    out.line = node.start_mark.line + 1
    out.lines = [n.start_mark.line + 1 for n in node.value]
    return out


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_map)
_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_SEQUENCE_TAG, _construct_seq)


# -- validation ---------------------------------------------------------------------------


class _Problems:
    def __init__(self) -> None:
        self.items: list[str] = []

    def add(self, where: str, message: str, line: int | None = None) -> None:
        prefix = f"line {line}, " if line else ""
        self.items.append(f"{prefix}{where}: {message}")


def _line(obj: Any) -> int | None:
    return getattr(obj, "line", None) or None


def _is_text(v: Any) -> bool:
    return isinstance(v, str) and v.strip() != ""


def _type_name(v: Any) -> str:
    if v is None:
        return "nothing (null)"
    return {
        bool: "true/false", int: "a number", float: "a number", str: "text",
        _Map: "a mapping", dict: "a mapping", _List: "a list", list: "a list",
    }.get(type(v), type(v).__name__)


def _scalar(v: Any) -> bool:
    return v is None or isinstance(v, str | int | float | bool)


def _condition(value: Any, where: str, probs: _Problems, line: int | None) -> Condition | None:
    if _scalar(value):
        return Condition("eq", value)
    if isinstance(value, list):
        probs.add(where, "a list is not a condition; to accept any of several values "
                  "write {in: [...]}", line)
        return None
    if not isinstance(value, dict):
        probs.add(where, f"expected a value or an operator mapping, got {_type_name(value)}", line)
        return None
    line = _line(value) or line
    if len(value) != 1:
        probs.add(where, f"an operator mapping has exactly one operator ({', '.join(OPERATORS)})"
                  f", got {len(value)}: {', '.join(map(str, value)) or 'none'}", line)
        return None
    ((op, arg),) = value.items()
    if op not in OPERATORS:
        probs.add(where, f"unknown operator {op!r}: use one of {', '.join(OPERATORS)}", line)
        return None
    if op in ("in", "not_in"):
        if not isinstance(arg, list) or not arg or not all(_scalar(a) for a in arg):
            probs.add(f"{where}.{op}", "expected a non-empty list of plain values", line)
            return None
    elif op in ("gt", "gte", "lt", "lte"):
        if not isinstance(arg, int | float) or isinstance(arg, bool):
            probs.add(f"{where}.{op}", f"expected a number, got {_type_name(arg)}", line)
            return None
    elif op == "exists":
        if not isinstance(arg, bool):
            probs.add(f"{where}.{op}", f"expected true or false, got {_type_name(arg)}", line)
            return None
    elif op == "startswith":
        if not isinstance(arg, str):
            probs.add(f"{where}.{op}", f"expected text, got {_type_name(arg)}", line)
            return None
    elif not _scalar(arg):
        probs.add(f"{where}.{op}", f"expected a plain value, got {_type_name(arg)}", line)
        return None
    return Condition(op, list(arg) if isinstance(arg, list) else arg)


def _matcher(
    spec: Any, where: str, probs: _Problems, line: int | None, depth: int = 0
) -> Callable[[], Matcher] | None:
    """Validate one matcher; return a factory of fresh matchers, or None on a problem."""
    if depth > MAX_DEPTH:
        probs.add(where, f"matchers nest deeper than {MAX_DEPTH} levels", line)
        return None
    if not isinstance(spec, dict):
        probs.add(where, "expected a matcher: a mapping with 'event' (a step) or one of "
                  f"{', '.join(COMBINATORS)}; got {_type_name(spec)}", line)
        return None
    line = _line(spec) or line
    combos = [c for c in COMBINATORS if c in spec]
    if combos:
        if len(spec) != 1:
            others = sorted(set(spec) - {combos[0]})
            probs.add(where, f"'{combos[0]}' stands alone in its mapping; also found: "
                      f"{', '.join(others)}", line)
            return None
        combo = combos[0]
        parts = spec[combo]
        if not isinstance(parts, list) or not parts:
            probs.add(f"{where}.{combo}", f"expected a non-empty list of matchers, got "
                      f"{_type_name(parts)}", line)
            return None
        lines = getattr(parts, "lines", [line] * len(parts))
        factories = [
            _matcher(p, f"{where}.{combo}[{i}]", probs, lines[i], depth + 1)
            for i, p in enumerate(parts)
        ]
        if any(f is None for f in factories):
            return None
        fs: list[Callable[[], Matcher]] = [f for f in factories if f is not None]
        make: Callable[[list[Matcher]], Matcher] = {
            "sequence": SequenceOf, "all": AllOf, "any": AnyOf,
        }[combo]
        return lambda: make([f() for f in fs])
    ok = True
    unknown = sorted(set(spec) - STEP_FIELDS)
    if unknown:
        probs.add(where, f"unknown field(s) {', '.join(map(repr, unknown))} in a step "
                  f"(a step has {', '.join(sorted(STEP_FIELDS))}; or use "
                  f"{', '.join(COMBINATORS)})", line)
        ok = False
    kind = spec.get("event")
    if "event" not in spec:
        probs.add(where, "a step needs 'event' (an event kind such as tap.captured)", line)
        ok = False
    elif not isinstance(kind, str) or not KIND_RE.match(kind):
        probs.add(f"{where}.event", f"{kind!r} is not an event kind (dotted lower-case words, "
                  "e.g. relay.li_mode)", line)
        ok = False
    elif not event_kinds.is_kind(kind):
        # Nothing emits it, so the step would wait forever: the exercise is unsolvable.
        guess = event_kinds.nearest(kind)
        probs.add(f"{where}.event", f"no part of doormat emits {kind!r}, so this exercise "
                  "could never be solved"
                  + (f"; did you mean {guess!r}?" if guess else
                     " (the kinds are listed in wire/event_kinds.py)"), line)
        ok = False
    where_spec = spec.get("where", {})
    conds: dict[str, Condition] = {}
    if not isinstance(where_spec, dict):
        probs.add(f"{where}.where", f"expected a mapping of field: condition, got "
                  f"{_type_name(where_spec)}", line)
        ok = False
    else:
        for fname, cond in where_spec.items():
            wline = _line(where_spec) or line
            if not FIELD_RE.match(fname) or fname in ("kind",):
                probs.add(f"{where}.where", f"{fname!r} is not a field name one can match "
                          "(letters, digits, '_'; dotted for nested, a number or * for "
                          "list elements; 'kind' is 'event')", wline)
                ok = False
                continue
            c = _condition(cond, f"{where}.where.{fname}", probs, wline)
            if c is None:
                ok = False
            else:
                conds[fname] = c
    count = spec.get("count", 1)
    if not isinstance(count, int) or isinstance(count, bool) or not 1 <= count <= 10_000:
        probs.add(f"{where}.count", f"expected a whole number from 1 to 10000, got {count!r}",
                  line)
        ok = False
    distinct = spec.get("distinct")
    if distinct is not None and (not isinstance(distinct, str) or not FIELD_RE.match(distinct)):
        probs.add(f"{where}.distinct", f"expected a field name, got {distinct!r}", line)
        ok = False
    if not ok or not isinstance(kind, str):  # ok: kind is an event kind (narrowed for mypy)
        return None
    return lambda: Step(kind, dict(conds), count, distinct)


def _exercise(raw: Any, index: int, probs: _Problems, line: int | None) -> Exercise | None:
    where = f"exercises[{index}]"
    if not isinstance(raw, dict):
        probs.add(where, f"expected a mapping (key, title, ...), got {_type_name(raw)}", line)
        return None
    line = _line(raw) or line
    key = raw.get("key")
    if isinstance(key, str):
        where += f" {key!r}"
    ok = True
    for missing in (f for f in REQUIRED_FIELDS if f not in raw):
        probs.add(where, f"missing {missing!r}", line)
        ok = False
    unknown = sorted(set(raw) - EXERCISE_FIELDS)
    if unknown:
        probs.add(where, f"unknown field(s) {', '.join(map(repr, unknown))}; an exercise has "
                  f"{', '.join(sorted(EXERCISE_FIELDS))}", line)
        ok = False
    if "key" in raw and (not isinstance(key, str) or not KEY_RE.match(key)):
        probs.add(f"{where}.key", f"{key!r} is not a key: 2-40 characters of a-z, 0-9 and '-', "
                  "starting with a letter or digit", line)
        ok = False
    for name, limit in (("title", 120), ("goal", 2000), ("instructions", 4000)):
        if name in raw:
            v = raw[name]
            if not _is_text(v):
                probs.add(f"{where}.{name}", f"expected non-empty text, got {_type_name(v)}",
                          line)
                ok = False
            elif len(v) > limit:
                probs.add(f"{where}.{name}", f"at most {limit} characters, got {len(v)}", line)
                ok = False
    diff = raw.get("difficulty")
    if "difficulty" in raw and (not isinstance(diff, int) or isinstance(diff, bool)
                                or diff not in (1, 2, 3)):
        probs.add(f"{where}.difficulty", f"expected 1, 2 or 3, got {diff!r}", line)
        ok = False
    hints = raw.get("hints", [])
    if not isinstance(hints, list):
        probs.add(f"{where}.hints", f"expected a list of at most {MAX_HINTS} texts, got "
                  f"{_type_name(hints)}", line)
        ok = False
        hints = []
    elif len(hints) > MAX_HINTS:
        probs.add(f"{where}.hints", f"at most {MAX_HINTS} hints, got {len(hints)}", line)
        ok = False
    for i, h in enumerate(hints):
        if not _is_text(h) or len(h) > 1000:
            probs.add(f"{where}.hints[{i}]", "expected non-empty text of at most 1000 "
                      f"characters, got {_type_name(h)}", line)
            ok = False
    enabled = raw.get("enabled", True)
    if not isinstance(enabled, bool):
        probs.add(f"{where}.enabled", f"expected true or false, got {enabled!r}", line)
        ok = False
    build = None
    if "solved_by" in raw:
        build = _matcher(raw["solved_by"], f"{where}.solved_by", probs, line)
        ok = ok and build is not None
    # ok: key is text and diff a number (the isinstance checks narrow the types for mypy).
    if not ok or build is None or not isinstance(key, str) or not isinstance(diff, int):
        return None
    return Exercise(
        key=key, title=raw["title"].strip(), difficulty=diff, goal=raw["goal"].strip(),
        instructions=raw["instructions"].strip(), hints=tuple(h.strip() for h in hints),
        enabled=enabled, solved_by=raw["solved_by"], build=build,
    )


def parse_exercises(text: str | bytes, source: str = "<exercises>") -> ExerciseSet:
    """Parse and validate an exercises file. Raises ExerciseFileError listing every
    problem found."""
    if isinstance(text, bytes):
        if len(text) > MAX_FILE_BYTES:
            raise ExerciseFileError(source, [f"the file is over {MAX_FILE_BYTES} bytes"])
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ExerciseFileError(source, [f"not UTF-8 text: {exc}"]) from None
    if len(text) > MAX_FILE_BYTES:
        raise ExerciseFileError(source, [f"the file is over {MAX_FILE_BYTES} characters"])
    try:
        doc = yaml.load(text, Loader=_Loader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        what = getattr(exc, "problem", None) or str(exc)
        ctx = getattr(exc, "context", None)
        raise ExerciseFileError(
            source, [f"{at}not valid YAML: {what}" + (f" ({ctx})" if ctx else "")]
        ) from None
    probs = _Problems()
    if not isinstance(doc, dict):
        raise ExerciseFileError(source, [f"the top level must be a mapping with 'version: 1' "
                                         f"and 'exercises: [...]', got {_type_name(doc)}"])
    unknown = sorted(set(doc) - {"version", "exercises"})
    if unknown:
        probs.add("top level", f"unknown field(s) {', '.join(map(repr, unknown))}; expected "
                  "'version' and 'exercises'", _line(doc))
    if doc.get("version") != 1 or isinstance(doc.get("version"), bool):
        probs.add("version", f"expected 1, got {doc.get('version')!r}", _line(doc))
    raw_list = doc.get("exercises")
    if not isinstance(raw_list, list) or not raw_list:
        probs.add("exercises", f"expected a non-empty list of exercises, got "
                  f"{_type_name(raw_list)}", _line(doc))
        raise ExerciseFileError(source, probs.items)
    lines = getattr(raw_list, "lines", [None] * len(raw_list))
    exercises = []
    seen: dict[str, int] = {}
    for i, raw in enumerate(raw_list):
        ex = _exercise(raw, i, probs, lines[i])
        if ex is None:
            continue
        if ex.key in seen:
            probs.add(f"exercises[{i}].key", f"{ex.key!r} is already the key of "
                      f"exercises[{seen[ex.key]}]; keys must be unique", lines[i])
            continue
        seen[ex.key] = i
        exercises.append(ex)
    if probs.items:
        raise ExerciseFileError(source, probs.items)
    return ExerciseSet(source, tuple(exercises))


def load_exercises(path: str | Path | None = None) -> ExerciseSet:
    """The exercises at ``path``, or the ones shipped with doormat."""
    if path is None:
        data = resources.files("doormat.lab").joinpath("exercises.yaml").read_bytes()
        return parse_exercises(data, "doormat/lab/exercises.yaml")
    p = Path(path)
    try:
        size = p.stat().st_size
        if size > MAX_FILE_BYTES:
            raise ExerciseFileError(str(p), [f"the file is over {MAX_FILE_BYTES} bytes"])
        data = p.read_bytes()
    except OSError as exc:
        raise ExerciseFileError(str(p), [f"cannot read it: {exc.strerror or exc}"]) from None
    return parse_exercises(data, str(p))
