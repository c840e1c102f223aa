"""Matchers, the engine, the score store and ``doormat lab``."""

from __future__ import annotations

from pathlib import Path

import pytest

from doormat.cli import main
from doormat.lab import LabEngine, ScoreStore, load_exercises, parse_exercises
from doormat.lab.matcher import Condition, replay
from wire.events import EventLog

FILE = """\
version: 1
exercises:
  - key: seq
    title: Sequence
    difficulty: 2
    goal: g
    instructions: i
    hints: [first, second]
    solved_by:
      sequence:
        - event: relay.li_mode
          where: {mode: blanket}
        - event: tap.captured
          where: {readable: false}
          count: 2
  - key: distinct
    title: Distinct
    difficulty: 1
    goal: g
    instructions: i
    solved_by: {event: device.sent, distinct: to_user, count: 2}
  - key: hidden
    title: Hidden
    difficulty: 3
    goal: g
    instructions: i
    enabled: false
    solved_by: {event: device.sent}
"""


def ev(kind: str, **fields: object) -> dict[str, object]:
    return {"t": 0, "actor": "x", "kind": kind, **fields}


@pytest.mark.parametrize(
    ("op", "want", "actual", "ok"),
    [
        ("eq", True, True, True),
        ("eq", True, 1, False),  # true is not 1
        ("eq", 1, True, False),
        ("eq", "a", "a", True),
        ("ne", "a", "b", True),
        ("in", ["a", "b"], "b", True),
        ("not_in", ["a"], "b", True),
        ("gte", 2, 2, True),
        ("gt", 2, 2, False),
        ("lt", 2, True, False),  # a bool is no number
        ("contains", "CC", ["IRI", "CC"], True),
        ("contains", "ell", "hello", True),
        ("contains", "x", 5, False),
        ("startswith", "archive:", "archive:acme", True),
    ],
)
def test_conditions(op: str, want: object, actual: object, ok: bool) -> None:
    assert Condition(op, want).test(actual) is ok


def test_missing_fields_and_paths() -> None:
    ex = parse_exercises(FILE.replace("{mode: blanket}", "{mode: blanket, gone: {exists: false}}"))
    m = ex.get("seq").matcher()
    assert not m.feed(ev("relay.li_mode", mode="blanket", gone=1))
    assert m.progress() == (0, 2)
    m.feed(ev("relay.li_mode", mode="blanket"))
    assert m.progress() == (1, 2)
    ex2 = parse_exercises(FILE.replace("{readable: false}", "{targets.*.value: {contains: '@g'}}"))
    m2 = ex2.get("seq").matcher()
    events = [ev("relay.li_mode", mode="blanket"),
              ev("tap.captured", targets=[{"value": "a@acme"}, {"value": "c@globex"}]),
              ev("tap.captured", targets=[{"value": "a@acme"}]),
              ev("tap.captured", targets=[{"value": "d@globex"}])]
    assert replay(m2, events)


def test_sequence_order_and_count() -> None:
    ex = parse_exercises(FILE)
    m = ex.get("seq").matcher()
    # captures before the switch do not count
    assert not replay(m, [ev("tap.captured", readable=False)] * 3)
    assert not m.feed(ev("relay.li_mode", mode="off"))
    assert not m.feed(ev("relay.li_mode", mode="blanket"))
    assert not m.feed(ev("tap.captured", readable=True))
    assert not m.feed(ev("tap.captured", readable=False))
    assert m.feed(ev("tap.captured", readable=False))
    m.reset()
    assert m.progress() == (0, 2)


def test_distinct() -> None:
    m = parse_exercises(FILE).get("distinct").matcher()
    assert not replay(m, [ev("device.sent", to_user="bob@acme")] * 5)
    assert m.feed(ev("device.sent", to_user="carol@globex"))


def test_engine_solves_from_events_only(tmp_path: Path) -> None:
    ex = parse_exercises(FILE)
    store = ScoreStore(tmp_path)
    engine = LabEngine(ex, store)
    solved: list[str] = []
    engine.subscribe(lambda note: solved.append(note["key"]))
    log = EventLog()
    log.emit("relay", "relay.li_mode", mode="blanket", previous="off")  # before attach
    engine.attach(log)  # replays what is logged
    assert [e.key for e in engine.active()] == ["seq", "distinct"]  # 'hidden' is disabled
    log.emit("tap", "tap.captured", readable=False, text="never stored")
    assert solved == []
    log.emit("tap", "tap.captured", readable=False)
    assert solved == ["seq"]
    log.emit("a", "device.sent", to_user="x")
    log.emit("a", "device.sent", to_user="y")
    assert solved == ["seq", "distinct"]
    # solving again records nothing new
    log.emit("relay", "relay.li_mode", mode="blanket", previous="off")
    log.emit("tap", "tap.captured", readable=False)
    log.emit("tap", "tap.captured", readable=False)
    assert solved == ["seq", "distinct"]
    board = engine.board()
    assert (board["solved"], board["total"], board["score"], board["max_score"]) == (2, 2, 30, 30)
    row = next(r for r in board["exercises"] if r["key"] == "seq")
    assert row["evidence"]["kind"] == "tap.captured" and "text" not in row["evidence"]
    # a fresh log starts progress over; the score stays
    engine.attach(EventLog())
    assert engine.board()["solved"] == 2
    # the old log is no longer watched
    engine.reset_scores()
    log.emit("a", "device.sent", to_user="p")
    log.emit("a", "device.sent", to_user="q")
    assert engine.board()["solved"] == 0
    store.close()


def test_hints_selection_and_reset(tmp_path: Path) -> None:
    ex = parse_exercises(FILE)
    store = ScoreStore(tmp_path)
    engine = LabEngine(ex, store)
    assert engine.reveal_hint("seq") == ["first"]
    assert engine.reveal_hint("seq") == ["first", "second"]
    assert engine.reveal_hint("seq") == ["first", "second"]  # no more than there are
    assert engine.reveal_hint("distinct") == []
    with pytest.raises(KeyError):
        engine.reveal_hint("hidden")
    store.select(["hidden", "seq"])
    assert [r["key"] for r in engine.board()["exercises"]] == ["seq", "hidden"]
    store.select(None)
    assert [r["key"] for r in engine.board()["exercises"]] == ["seq", "distinct"]
    store.reset()
    assert store.hints_shown() == {}
    store.close()


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_lab_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    home = str(tmp_path / "home")
    code, out, _ = run(capsys, "lab", "status", "--home", home)
    assert code == 0 and "0 of 19 solved" in out and "first-message" in out
    # solve one the only way there is: events through the engine
    with ScoreStore(home) as store:
        engine = LabEngine(load_exercises(), store)
        log = EventLog()
        engine.attach(log)
        log.emit("alice@acme.phone", "device.sent", id="1", to_user="bob@acme", text="hi")
        log.emit("bob@acme.phone", "device.received", id="1", text="hi")
    code, out, _ = run(capsys, "lab", "status", "--home", home)
    assert "1 of 19 solved" in out and "[x] solved" in out
    code, out, _ = run(capsys, "lab", "hint", "warrant-expired", "--home", home)
    assert code == 0 and out.startswith("hint 1/1:")
    code, out, _ = run(capsys, "lab", "select", "first-message", "warrant-expired", "--home", home)
    assert code == 0
    code, out, _ = run(capsys, "lab", "status", "--home", home)
    assert "1 of 2 solved" in out and "teacher selected 2" in out
    code, _, err = run(capsys, "lab", "select", "nope", "--home", home)
    assert code == 2 and "no exercise 'nope'" in err
    code, out, _ = run(capsys, "lab", "list", "--home", home)
    assert out.count("appears") == 2 and out.count("hidden") == 17
    code, out, _ = run(capsys, "lab", "reset", "--home", home)
    code, out, _ = run(capsys, "lab", "status", "--home", home)
    assert "0 of 2 solved" in out
    code, out, _ = run(capsys, "lab", "select", "--all", "--home", home)
    code, out, _ = run(capsys, "lab", "status", "--json", "--home", home)
    assert '"total": 19' in out


def test_lab_check_and_custom_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = tmp_path / "good.yaml"
    good.write_text(FILE)
    code, out, _ = run(capsys, "lab", "check", str(good))
    assert code == 0 and "3 exercise(s), valid" in out
    bad = tmp_path / "bad.yaml"
    bad.write_text(FILE.replace("difficulty: 2", "difficulty: 5"))
    code, _, err = run(capsys, "lab", "check", str(bad))
    assert code == 1 and "difficulty: expected 1, 2 or 3, got 5" in err
    code, out, _ = run(capsys, "lab", "status", "--exercises", str(good), "--home",
                       str(tmp_path / "h"))
    assert "0 of 2 solved" in out
    code, _, err = run(capsys, "lab", "status", "--exercises", str(bad), "--home",
                       str(tmp_path / "h"))
    assert code == 2 and "problem(s)" in err


def test_lab_check_refuses_a_kind_nothing_emits(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A misspelt event kind would leave the exercise waiting forever: `lab check` says
    which exercise, which kind, and the nearest kind that exists (wire/event_kinds.py)."""
    misspelt = tmp_path / "misspelt.yaml"
    misspelt.write_text(FILE.replace("- event: tap.captured", "- event: tap.capture"))
    code, out, err = run(capsys, "lab", "check", str(misspelt))
    assert code == 1 and out == ""
    assert "exercises[0] 'seq'.solved_by.sequence[1].event" in err
    assert "no part of doormat emits 'tap.capture'" in err
    assert "did you mean 'tap.captured'?" in err
    unknown = tmp_path / "unknown.yaml"
    unknown.write_text(FILE.replace("event: device.sent, distinct", "event: zzz.qqq, distinct"))
    code, _, err = run(capsys, "lab", "check", str(unknown))
    assert code == 1 and "exercises[1] 'distinct'" in err and "no part of doormat emits" in err
    assert "wire/event_kinds.py" in err


def test_lab_check_accepts_the_shipped_file(capsys: pytest.CaptureFixture[str]) -> None:
    shipped = Path(__file__).resolve().parents[2] / "doormat" / "lab" / "exercises.yaml"
    code, out, _ = run(capsys, "lab", "check", str(shipped))
    assert code == 0 and "exercise(s), valid" in out
