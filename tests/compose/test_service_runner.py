"""doormat.services.runner: the one lifecycle of the compose services, with a fake part
(no broker): retries with back-off until the part starts, the heartbeat, the events on
the sink, a clean stop, a refused login that is final."""

from __future__ import annotations

import asyncio
import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from doormat.cli import CommandError
from doormat.services import runner
from wire.events import EventLog


@dataclass
class FakePart:
    failures: list[Exception]
    started: bool = False
    stopped: int = 0

    async def start(self) -> None:
        if self.failures:
            raise self.failures.pop(0)
        self.started = True

    async def stop(self) -> None:
        self.stopped += 1

    @property
    def connected(self) -> bool:
        return self.started


@dataclass
class FakeService(runner.Service[FakePart]):
    kind = "fake"
    failures: list[Exception] = field(default_factory=list)
    made: list[FakePart] = field(default_factory=list)

    @property
    def actor(self) -> str:
        return "fake-actor"

    def starting(self) -> dict[str, Any]:
        return {"extra": 1}

    def make(self, events: EventLog) -> FakePart:
        self.made.append(FakePart(self.failures))
        return self.made[-1]

    async def work(self, part: FakePart, stop: asyncio.Event, events: EventLog) -> None:
        stop.set()  # done at once: the runner stops cleanly


def lines(out: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in out.getvalue().splitlines()]


def test_retries_until_started_then_stops_cleanly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(runner, "RETRY_MIN", 0.01)
    beat = tmp_path / "health" / "beat.json"
    service = FakeService("mqtt://127.0.0.1:1883", str(beat),
                          failures=[OSError("connection refused"), TimeoutError()])
    out = io.StringIO()
    asyncio.run(runner.serve(service, asyncio.Event(), out))
    events = lines(out)
    assert [e["kind"] for e in events] == [
        "service.starting", "service.retry", "service.retry", "service.ready",
        "service.stopped",
    ]
    assert events[0] == {**events[0], "actor": "fake-actor", "service": "fake",
                         "broker": "mqtt://127.0.0.1:1883", "extra": 1}
    assert [(e["attempt"], e["reason"], e["after_s"]) for e in events[1:3]] == [
        (1, "connection refused", 0.01), (2, "TimeoutError", 0.02)
    ]
    # one part per attempt, each stopped once
    assert len(service.made) == 3 and [p.stopped for p in service.made] == [1, 1, 1]
    record = json.loads(beat.read_text())
    assert record["status"] == "stopped" and record["service"] == "fake fake-actor"
    assert sorted(p.name for p in beat.parent.iterdir()) == ["beat.json"]


def test_a_refused_login_is_final() -> None:
    service = FakeService("mqtt://127.0.0.1:1883", None,
                          failures=[OSError("the broker refused the login of fake")])
    out = io.StringIO()
    with pytest.raises(CommandError, match="refused the login"):
        asyncio.run(runner.serve(service, asyncio.Event(), out))
    assert [e["kind"] for e in lines(out)] == ["service.starting", "service.failed"]


def test_stopped_while_waiting_for_the_broker() -> None:
    service = FakeService("mqtt://127.0.0.1:1883", None, failures=[OSError("not there")] * 99)

    async def main() -> None:
        stop = asyncio.Event()
        asyncio.get_running_loop().call_later(0.2, stop.set)
        await runner.serve(service, stop, out)

    out = io.StringIO()
    asyncio.run(main())
    kinds = [e["kind"] for e in lines(out)]
    assert kinds[0] == "service.starting" and kinds[-1] == "service.stopped"
    assert "service.ready" not in kinds
