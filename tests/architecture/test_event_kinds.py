"""The registry of event kinds (wire/event_kinds.py) and the code agree, both ways.

The scan reads the product's source (no import, no run): every call of an *emitter*
with a kind. An emitter is ``EventLog.emit`` (``<log>.emit(actor, "kind", ...)``) or a
function that takes a parameter named ``kind`` and passes it on to an emitter (a
forwarder, like the relay's ``_event(out, "relay.accepted", ...)`` or
``relay.actions.emit(events, out, kind, ...)``); forwarders are found to a fixpoint, so
a new helper is covered without naming it here. Then

* every kind an emitter is called with must be in the registry (a misspelt kind fails,
  with the nearest registered one);
* every registered kind must be emitted somewhere (a stale line fails);
* an emitter called with a kind that is neither a string literal nor a forwarded
  ``kind`` parameter fails too: a kind built at run time (``f"relay.{x}"``) would escape
  the scan, so the code must spell its kinds out (a mapping of literals, or one
  literal per branch). The one exception is a replay of events that already went
  through an emitter (``REPLAYS``: the relay's ``DeferredEvents`` holds events during a
  store transaction and emits them after the commit); an entry there that matches no
  code fails as well.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from wire.event_kinds import KINDS, nearest

ROOT = Path(__file__).resolve().parents[2]
PRODUCT = ("wire", "infra", "relay", "clients", "interceptor", "doormat", "bench")
KIND_RE = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$")
# (file, function) that re-emit events an emitter already took, kinds unchanged.
REPLAYS = {("relay/intake.py", "held")}


@dataclass
class Scan:
    emitted: dict[str, list[str]] = field(default_factory=dict)  # kind -> places
    dynamic: list[str] = field(default_factory=list)  # places with a run-time kind
    replays: set[tuple[str, str]] = field(default_factory=set)  # REPLAYS entries seen


def _callee(node: ast.Call) -> str | None:
    if isinstance(node.func, ast.Attribute):
        return node.func.attr
    if isinstance(node.func, ast.Name):
        return node.func.id
    return None


def _params(fn: ast.FunctionDef | ast.AsyncFunctionDef) -> set[str]:
    a = fn.args
    return {p.arg for p in [*a.posonlyargs, *a.args, *a.kwonlyargs]}


def _functions(tree: ast.AST) -> list[ast.FunctionDef | ast.AsyncFunctionDef]:
    return [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)]


def _passes_kind(call: ast.Call) -> bool:
    """``kind`` passed on as a positional argument or as ``kind=kind``."""
    named = [k.value for k in call.keywords if k.arg == "kind"]
    return any(isinstance(a, ast.Name) and a.id == "kind" for a in [*call.args, *named])


def scan(
    root: Path,
    packages: tuple[str, ...] = PRODUCT,
    replays: set[tuple[str, str]] = REPLAYS,
) -> Scan:
    trees = {
        str(path.relative_to(root)): ast.parse(path.read_text(), filename=str(path))
        for package in packages
        for path in sorted((root / package).rglob("*.py"))
    }
    emitters = {"emit"}
    changed = True
    while changed:  # forwarders of forwarders
        changed = False
        for tree in trees.values():
            for fn in _functions(tree):
                if fn.name in emitters or "kind" not in _params(fn):
                    continue
                calls = [c for c in ast.walk(fn) if isinstance(c, ast.Call)]
                if any(_callee(c) in emitters and _passes_kind(c) for c in calls):
                    emitters.add(fn.name)
                    changed = True
    found = Scan()
    for name, tree in trees.items():
        forwarded: set[int] = set()  # ids of calls that forward their function's `kind`
        replayed: dict[int, tuple[str, str]] = {}  # ids of calls in a REPLAYS function
        for fn in _functions(tree):
            calls = [c for c in ast.walk(fn) if isinstance(c, ast.Call)]
            if "kind" in _params(fn):
                forwarded |= {id(c) for c in calls}
            if (name, fn.name) in replays:
                replayed |= {id(c): (name, fn.name) for c in calls}
        for call in (n for n in ast.walk(tree) if isinstance(n, ast.Call)):
            if _callee(call) not in emitters:
                continue
            place = f"{name}:{call.lineno}"
            values = [*call.args, *(k.value for k in call.keywords)]
            kinds = [
                v.value
                for v in values
                if isinstance(v, ast.Constant)
                and isinstance(v.value, str)
                and KIND_RE.fullmatch(v.value)
            ]
            if kinds:
                found.emitted.setdefault(kinds[0], []).append(place)
            elif _passes_kind(call) and id(call) in forwarded:
                pass
            elif id(call) in replayed:
                found.replays.add(replayed[id(call)])
            else:
                found.dynamic.append(place)
    return found


def problems(
    found: Scan, registry: object = KINDS, replays: set[tuple[str, str]] = REPLAYS
) -> list[str]:
    known = set(registry)  # type: ignore[call-overload]
    out = []
    for kind, places in sorted(found.emitted.items()):
        if kind not in known:
            hint = nearest(kind) if registry is KINDS else None
            out.append(
                f"{', '.join(places)}: emits {kind!r}, which is not in wire/event_kinds.py"
                + (f" (did you mean {hint!r}?)" if hint else "")
            )
    for kind in sorted(known - set(found.emitted)):
        out.append(f"wire/event_kinds.py lists {kind!r}, which nothing emits")
    for place in found.dynamic:
        out.append(f"{place}: emits a kind built at run time; spell it out as a literal")
    for file, function in sorted(replays - found.replays):
        out.append(f"REPLAYS names {file} {function}(), which re-emits nothing")
    return out


def test_registry_and_code_agree() -> None:
    found = scan(ROOT)
    assert len(found.emitted) >= 60  # the scan sees the product, not an empty tree
    assert problems(found) == []


def test_registry_entries_are_kinds_with_a_meaning() -> None:
    for kind, meaning in KINDS.items():
        assert KIND_RE.fullmatch(kind), kind
        assert meaning and "\n" not in meaning and len(meaning) <= 90, kind


def test_nearest_suggests_a_spelling() -> None:
    assert nearest("tap.capture") == "tap.captured"
    assert nearest("device.recieved") == "device.received"
    assert nearest("zzz.qqq") is None


@pytest.fixture
def planted(tmp_path: Path) -> Path:
    pkg = tmp_path / "relay"
    pkg.mkdir()
    (pkg / "sneaky.py").write_text(
        "def _note(events, kind, **fields):\n"
        "    events.emit('relay', kind, **fields)\n"
        "\n"
        "def run(events, what, kind):\n"
        "    events.emit('relay', 'relay.acepted', id=1)\n"
        "    _note(events, 'relay.started', topic_kind=kind)\n"
        "    events.emit('relay', f'relay.{what}')\n"
        "\n"
        "def replay(events, held):\n"
        "    for actor, kind, fields in held:\n"
        "        events.emit(actor, kind, **fields)\n"
    )
    return tmp_path


def test_checker_catches_a_violation(planted: Path) -> None:
    """Each rule can fail: a misspelt kind, a stale registry line, a run-time kind, a
    replay not listed (and a listed one that is gone); a kind sent through a forwarder
    is seen."""
    found = scan(planted, ("relay",), replays=set())
    assert found.emitted == {
        "relay.acepted": ["relay/sneaky.py:5"],
        "relay.started": ["relay/sneaky.py:6"],
    }
    assert found.dynamic == ["relay/sneaky.py:7", "relay/sneaky.py:11"]
    registry = {"relay.started": "x", "relay.stopped": "y"}
    assert problems(found, registry, replays={("relay/gone.py", "held")}) == [
        "relay/sneaky.py:5: emits 'relay.acepted', which is not in wire/event_kinds.py",
        "wire/event_kinds.py lists 'relay.stopped', which nothing emits",
        "relay/sneaky.py:7: emits a kind built at run time; spell it out as a literal",
        "relay/sneaky.py:11: emits a kind built at run time; spell it out as a literal",
        "REPLAYS names relay/gone.py held(), which re-emits nothing",
    ]
    listed = scan(planted, ("relay",), replays={("relay/sneaky.py", "replay")})
    assert listed.dynamic == ["relay/sneaky.py:7"]
    assert listed.replays == {("relay/sneaky.py", "replay")}
