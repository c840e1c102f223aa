"""The exercises file: the shipped one is complete, and bad files fail with clear errors
that say where and what (the file is outside input: a teacher writes their own)."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from doormat.lab import ExerciseFileError, load_exercises, parse_exercises

GOOD = """\
version: 1
exercises:
  - key: one
    title: One
    difficulty: 1
    goal: learn one thing
    instructions: do one thing
    hints: [a, b]
    solved_by:
      event: device.sent
"""


def problems(text: str) -> list[str]:
    with pytest.raises(ExerciseFileError) as info:
        parse_exercises(textwrap.dedent(text), "test.yaml")
    assert str(info.value).startswith("test.yaml: ")
    return info.value.problems


def test_shipped_file_is_complete() -> None:
    ex = load_exercises()
    assert len(ex.exercises) >= 12
    keys = ex.keys()
    assert len(keys) == len(set(keys))
    for e in ex.exercises:
        assert e.difficulty in (1, 2, 3)
        assert len(e.hints) <= 3
        assert e.title and e.goal and e.instructions
        assert e.describe_solution()
    # the list, by key
    for key in ("relay-sees-no-plaintext", "blanket-still-sealed", "escrow-opens-the-tap",
                "escrow-key-stolen", "global-key-opens-the-tap", "global-key-one-phone",
                "ghost-reads", "ghost-detected", "warrant-bad-signature", "warrant-expired",
                "warrant-wildcard", "scoped-cc-archive", "scoped-metadata-only",
                "ledger-verified", "ledger-tamper-caught"):
        assert key in keys
    reasons = {e.solved_by["where"]["reason"] for e in ex.exercises
               if e.solved_by.get("event") == "interceptor.warrant_refused"}
    assert len(reasons) >= 3
    assert set(e.difficulty for e in ex.exercises) == {1, 2, 3}


def test_a_good_minimal_file() -> None:
    ex = parse_exercises(GOOD)
    assert ex.keys() == ["one"]
    assert ex.get("one").enabled is True
    assert ex.get("one").points == 10


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", "the top level must be a mapping"),
        ("- a\n- b\n", "the top level must be a mapping"),
        ("version: 2\nexercises: []\n", "version: expected 1, got 2"),
        ("version: 1\nexercises: []\n", "exercises: expected a non-empty list"),
        ("version: 1\nexercises: [1]\n", "exercises[0]: expected a mapping"),
        ("version: 1\nextra: 1\nexercises: [1]\n", "unknown field(s) 'extra'"),
        ("version: 1\nexercises:\n  - {key: x}\n", "missing 'title'"),
        ("version: 1\nexercises: [\n", "not valid YAML"),
        ("version: 1\nversion: 1\nexercises: []\n", "the key 'version' appears twice"),
        ("a: &x [1]\nb: *x\n", "aliases (*name) are not allowed"),
    ],
)
def test_bad_top_level(text: str, expected: str) -> None:
    assert any(expected in p for p in problems(text)), problems(text)


def exercise(**changes: object) -> str:
    fields = {
        "key": "one", "title": "One", "difficulty": 1, "goal": "g", "instructions": "i",
        "hints": "[a]", "solved_by": "{event: device.sent}",
    }
    fields.update({k: v for k, v in changes.items()})
    body = "\n".join(f"    {k}: {v}" for k, v in fields.items() if v is not None)
    return "version: 1\nexercises:\n  - " + body.lstrip() + "\n"


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"key": "'Bad Key'"}, "'Bad Key' is not a key"),
        ({"difficulty": 4}, "difficulty: expected 1, 2 or 3, got 4"),
        ({"difficulty": "true"}, "difficulty: expected 1, 2 or 3, got True"),
        ({"hints": "[a, b, c, d]"}, "at most 3 hints, got 4"),
        ({"hints": "[a, '']"}, "hints[1]: expected non-empty text"),
        ({"hints": "a hint"}, "hints: expected a list"),
        ({"title": "''"}, "title: expected non-empty text"),
        ({"enabled": "maybe"}, "enabled: expected true or false"),
        ({"answer": "42"}, "unknown field(s) 'answer'"),
        ({"solved_by": None}, "missing 'solved_by'"),
        ({"solved_by": "device.sent"}, "expected a matcher"),
        ({"solved_by": "{event: Device Sent}"}, "is not an event kind"),
        ({"solved_by": "{kind: device.sent}"}, "unknown field(s) 'kind' in a step"),
        ({"solved_by": "{where: {a: 1}}"}, "a step needs 'event'"),
        ({"solved_by": "{event: tap.captured, where: {readable: {is: true}}}"},
         "unknown operator 'is'"),
        ({"solved_by": "{event: tap.captured, where: {n: {gte: 1, lte: 3}}}"},
         "exactly one operator"),
        ({"solved_by": "{event: tap.captured, where: {n: {gte: many}}}"},
         "where.n.gte: expected a number"),
        ({"solved_by": "{event: tap.captured, where: {n: [1, 2]}}"}, "write {in: [...]}"),
        ({"solved_by": "{event: tap.captured, where: {n: {in: []}}}"},
         "expected a non-empty list of plain values"),
        ({"solved_by": "{event: tap.captured, where: {'bad field': 1}}"},
         "is not a field name"),
        ({"solved_by": "{event: tap.captured, count: 0}"}, "count: expected a whole number"),
        ({"solved_by": "{event: tap.captured, where: [readable]}"},
         "where: expected a mapping"),
        ({"solved_by": "{sequence: []}"}, "sequence: expected a non-empty list"),
        ({"solved_by": "{sequence: [{event: a.b}], event: c.d}"}, "stands alone"),
        ({"solved_by": "{any: [{event: a.b}, {event: 7}]}"}, "solved_by.any[1].event"),
    ],
)
def test_bad_exercise(changes: dict[str, object], expected: str) -> None:
    found = problems(exercise(**changes))
    assert any(expected in p for p in found), found
    # every problem says which exercise (and, inside an exercise, on which line)
    assert all("exercises[0]" in p for p in found), found
    assert all(p.startswith("line ") for p in found), found


def test_every_problem_reported_at_once_with_lines() -> None:
    text = GOOD + textwrap.indent(textwrap.dedent("""\
      - key: two
        title: Two
        difficulty: 9
        goal: g
        instructions: i
        solved_by: {event: tap.captured, where: {readable: {maybe: 1}}}
      - key: one
        title: One again
        difficulty: 1
        goal: g
        instructions: i
        solved_by: {event: device.sent}
    """), "  ")
    found = problems(text)
    joined = "\n".join(found)
    assert "exercises[1] 'two'.difficulty: expected 1, 2 or 3, got 9" in joined
    assert "unknown operator 'maybe'" in joined
    assert "'one' is already the key of exercises[0]" in joined
    assert len(found) == 3
    assert any(p.startswith("line 11") for p in found), found  # where 'two' starts


def test_load_errors(tmp_path: Path) -> None:
    with pytest.raises(ExerciseFileError, match="cannot read it"):
        load_exercises(tmp_path / "missing.yaml")
    big = tmp_path / "big.yaml"
    big.write_bytes(b"#" * (1 << 20 + 1))
    with pytest.raises(ExerciseFileError, match="over"):
        load_exercises(big)
    binary = tmp_path / "bin.yaml"
    binary.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(ExerciseFileError, match="not UTF-8"):
        load_exercises(binary)
