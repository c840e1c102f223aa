"""The LI switch, sans-I/O: blanket mirror and scoped X1 tasks (relay/li.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from relay.li import MIRROR_TOPIC, LawfulIntercept, TaskError, parse_task
from relay.router import Publish
from wire import topics
from wire.envelope import Envelope
from wire.events import EventLog
from wire.ids import INTERCEPTOR_ID

NOW_MS = 1_800_000_000_000


def env(sender: str, recipient: str, i: int = 0) -> Envelope:
    return Envelope(f"{i:032x}", sender, recipient, NOW_MS, b"h", b"c" * 48)


def task(**over: object) -> dict[str, object]:
    base: dict[str, object] = {
        "op": "activate",
        "task_id": "T1",
        "liid": "LIID-1",
        "targets": [{"format": "user", "value": "alice@acme"}],
        "categories": ["IRI"],
        "not_before": NOW_MS // 1000 - 10,
        "not_after": NOW_MS // 1000 + 3600,
    }
    base.update(over)
    return base


def make(tmp_path: Path, mode: str = "scoped", now: list[int] | None = None) -> LawfulIntercept:
    clock = now or [NOW_MS]
    return LawfulIntercept(EventLog(), mode, clock=lambda: clock[0], db_path=tmp_path / "r.db")


def x1(li: LawfulIntercept, obj: object, owner: str = INTERCEPTOR_ID) -> dict[str, object]:
    out = li.handle_x1(owner, json.dumps(obj).encode())
    if owner != INTERCEPTOR_ID:
        assert out == ()
        return {}
    (answer,) = out
    assert isinstance(answer, Publish) and answer.topic == topics.inbox(INTERCEPTOR_ID, "x1")
    return json.loads(answer.payload)


def test_off_and_blanket(tmp_path: Path) -> None:
    li = make(tmp_path, "off")
    assert li.on_accepted(env("bob@acme.phone", "carol@globex.phone"), b"raw", 1) == ()
    li.set_mode("blanket")
    (pub,) = li.on_accepted(env("bob@acme.phone", "carol@globex.phone"), b"raw", 1)
    assert isinstance(pub, Publish) and pub.topic == MIRROR_TOPIC
    assert json.loads(pub.payload)["from"] == "bob@acme.phone"
    with pytest.raises(ValueError, match="unknown LI mode"):
        li.set_mode("everything")


def test_scoped_copies_only_targets_inside_the_window(tmp_path: Path) -> None:
    now = [NOW_MS]
    li = make(tmp_path, now=now)
    assert x1(li, task(categories=["IRI", "CC"])) == {"ok": True, "op": "activate", "task_id": "T1"}
    hit = li.on_accepted(env("alice@acme.laptop", "carol@globex.phone"), b"raw", 1)
    assert [p.topic for p in hit if isinstance(p, Publish)] == [
        topics.inbox(INTERCEPTOR_ID, "x2"), topics.inbox(INTERCEPTOR_ID, "x3")]
    iri = json.loads(hit[0].payload)  # type: ignore[union-attr]
    assert (iri["liid"], iri["seq"], iri["to"]) == ("LIID-1", 1, "carol@globex.phone")
    assert "envelope" not in iri
    # Not a target: nothing.
    assert li.on_accepted(env("bob@acme.phone", "carol@globex.phone"), b"raw", 2) == []
    # Received by the target counts too.
    assert len(li.on_accepted(env("dave@globex.phone", "alice@acme.phone"), b"raw", 3)) == 2
    # After not_after: nothing, and the task ended by itself.
    now[0] = NOW_MS + 3601 * 1000
    assert li.on_accepted(env("alice@acme.phone", "bob@acme.phone"), b"raw", 4) == []
    assert li.tasks == {}


def test_task_not_yet_valid_copies_nothing(tmp_path: Path) -> None:
    li = make(tmp_path)
    x1(li, task(not_before=NOW_MS // 1000 + 60))
    assert li.on_accepted(env("alice@acme.phone", "bob@acme.phone"), b"raw", 1) == []


def test_deactivate_stops_at_once_and_tasks_survive_restart(tmp_path: Path) -> None:
    li = make(tmp_path)
    x1(li, task())
    li.close()
    li = make(tmp_path)
    assert "T1" in li.tasks
    assert x1(li, {"op": "deactivate", "task_id": "T1"})["ok"] is True
    assert li.on_accepted(env("alice@acme.phone", "bob@acme.phone"), b"raw", 1) == []
    li.close()
    assert make(tmp_path).tasks == {}


@pytest.mark.parametrize(
    "bad",
    [
        task(targets=[{"format": "user", "value": "*"}]),
        task(targets=[{"format": "user", "value": "all"}]),
        task(targets=[{"format": "device", "value": "alice@acme.#"}]),
        task(targets=[]),
        task(targets=[{"format": "user", "value": f"u{i}@acme"} for i in range(11)]),
        task(categories=["EVERYTHING"]),
        task(not_before=5, not_after=5),
        task(extra=1),
        task(task_id="a b"),
    ],
)
def test_bad_tasks_refused(tmp_path: Path, bad: dict[str, object]) -> None:
    li = make(tmp_path)
    answer = x1(li, bad)
    assert answer["ok"] is False and answer["error"]
    assert li.tasks == {}


def test_only_the_interceptor_provisions(tmp_path: Path) -> None:
    li = make(tmp_path)
    x1(li, task(), owner="alice@acme.phone")
    assert li.tasks == {}
    with pytest.raises(TaskError):
        parse_task("nope")
