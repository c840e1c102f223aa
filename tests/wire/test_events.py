"""wire.events.EventLog: kept in memory or not, a JSON-lines sink flushed per event or
once for a group, listeners always called."""

from __future__ import annotations

import io
import json

import pytest

from wire.events import Event, EventLog, EventsNotKept


class CountingSink(io.StringIO):
    flushes = 0

    def flush(self) -> None:
        self.flushes += 1
        super().flush()


def test_default_log_keeps_events_and_filters_them() -> None:
    log = EventLog()
    log.emit("relay", "relay.accepted", id="1")
    log.emit("alice@acme.phone", "device.sent", id="2")
    assert [e["kind"] for e in log.events()] == ["relay.accepted", "device.sent"]
    assert [e["id"] for e in log.events(kind="device.sent")] == ["2"]
    assert [e["id"] for e in log.events(actor="relay")] == ["1"]
    assert log.keeps


def test_a_log_that_keeps_nothing_says_so_instead_of_answering_empty() -> None:
    sink = CountingSink()
    log = EventLog(sink, keep=False)
    seen: list[Event] = []
    log.subscribe(seen.append)
    event = log.emit("tap", "tap.captured", size=3)
    assert not log.keeps
    with pytest.raises(EventsNotKept, match="keeps no events"):
        log.events()
    # ... but its listeners and its sink still get every event
    assert seen == [event]
    assert json.loads(sink.getvalue()) == event
    assert sink.flushes == 1


def test_the_sink_is_flushed_once_for_a_deferred_group() -> None:
    sink = CountingSink()
    log = EventLog(sink, keep=False)
    with log.deferred_flush():
        for i in range(5):
            log.emit("relay", "relay.accepted", i=i)
        assert sink.flushes == 0
    assert sink.flushes == 1
    assert [json.loads(line)["i"] for line in sink.getvalue().splitlines()] == list(range(5))
    log.emit("relay", "relay.acked")
    assert sink.flushes == 2  # flushed per event again


def test_lines_are_sorted_json_objects() -> None:
    sink = io.StringIO()
    EventLog(sink).emit("relay", "relay.started", pending=0, reason="startup")
    line = sink.getvalue()
    assert line.endswith("\n") and line.count("\n") == 1
    assert list(json.loads(line)) == sorted(json.loads(line))


def test_append_records_an_event_emitted_elsewhere_as_it_is() -> None:
    sink = io.StringIO()
    mirror = EventLog(sink)
    seen: list[dict[str, object]] = []
    mirror.subscribe(seen.append)
    event = {"t": 5, "actor": "relay", "kind": "relay.accepted", "svc": "relay"}
    assert mirror.append(event) is event
    assert mirror.events() == [event] and seen == [event]
    assert json.loads(sink.getvalue()) == event
