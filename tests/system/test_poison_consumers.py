"""The same class of bug in every other consumer (issue 12, points 2 and 9): what each
reads from the broker is parsed strictly, refused with a reason, and never raises out of
its handler (which would, on today's main, make the link reconnect on it forever).

* the blanket tap's mirror records (``seq`` Infinity or 1e999 raised OverflowError on
  main, deep nesting RecursionError - both outside what it caught);
* the scoped interceptor's X2/X3 records (deep nesting raised RecursionError on main)
  and its X1 answers;
* the agency's HI-2/HI-3 records (NaN, huge integers, deep nesting).
"""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from clients.crypto import seal_to
from doormat.system import System
from interceptor.tap import Tap
from wire.events import EventLog
from wire.li.errors import HandoverError
from wire.li.handover import HANDOVER_INFO, decode_record

DEEP = "[" * 20_000 + "]" * 20_000


def _good_mirror(envelope: bytes, seq: int = 1) -> bytes:
    return json.dumps({"liid": "BLANKET", "seq": seq, "t": 1, "id": "x", "from": "a", "to": "b",
                       "size": len(envelope), "bucket": 1,
                       "envelope": base64.b64encode(envelope).decode()}).encode()  # fmt: skip


async def test_the_tap_refuses_and_sets_aside_bad_mirror_records(
    system: System, tmp_path: Any
) -> None:
    d = await system.send("alice@acme.phone", "bob@acme", "a real envelope")
    assert await system.wait_delivered(d)
    assert system.relay is not None
    raw = next(iter(system.relay.captured()))
    events = EventLog()
    tap = Tap("127.0.0.1", 1, "unused", tmp_path / "tap.sqlite", events)  # not connected
    good = _good_mirror(raw)
    bad = [
        good.replace(b'"seq": 1', b'"seq": Infinity'),
        good.replace(b'"seq": 1', b'"seq": 1e999'),
        good.replace(b'"seq": 1', b'"seq": ' + b"9" * 5000),
        good.replace(b'"seq": 1', b'"seq": ' + DEEP.encode()),
        good.replace(b'"liid": "BLANKET"', b'"liid": NaN'),
        good.replace(b'"envelope": "', b'"envelope": "***'),
        b"[1, 2, 3]",
        b"\xff",
    ]
    try:
        for payload in bad:
            tap.capture("mirror", payload)
        tap.capture("mirror", good)
        assert tap.count("mirror") == 1
        rejected = events.events(kind="tap.rejected")
        assert len(rejected) == len(bad)
        assert all(r["reason"] for r in rejected)
        assert len(events.events(kind="service.set_aside")) == len(bad)
        assert tap.link.set_aside_store.entries == len(bad)
        assert len(events.events(kind="tap.captured")) == 1
    finally:
        await tap.stop()


async def test_the_interceptor_refuses_bad_relay_records_and_x1_answers(
    system: System,
) -> None:
    assert system.interceptor is not None
    core = system.interceptor.core
    for payload in (
        b'{"task_id": ' + DEEP.encode() + b"}",
        b'{"task_id": NaN}',
        b'{"task_id": "T1", "ts": ' + b"9" * 5000 + b"}",
        b"\xff",
    ):
        assert core.on_relay_record("x3", payload) == []
    rejected = system.events.events(kind="interceptor.rejected")
    assert [e["reason"] for e in rejected][-4:] == ["unreadable relay record"] * 4
    await system.interceptor._on_message("x1", b'{"ok": true, "task_id": ' + b"9" * 5000 + b"}")
    (answer,) = system.events.events(kind="interceptor.x1_answer")
    assert answer["ok"] is False and "5000 digits" in answer["error"]


@pytest.mark.parametrize(
    ("body", "why"),
    [
        (b'{"liid": "L", "category": "IRI", "sequence": NaN, "source": "relay"}', "NaN"),
        (b'{"liid": "L", "category": "IRI", "sequence": ' + b"9" * 5000 + b', "source": "r"}',
         "5000 digits"),
        (b'{"liid": ' + DEEP.encode() + b"}", "nested"),
        (b'{"liid": "L", "liid": "M"}', "repeats the key"),
    ],
)
def test_the_agency_reads_handover_records_strictly(body: bytes, why: str) -> None:
    with pytest.raises(HandoverError, match=why):
        decode_record(body)


async def test_the_agency_refuses_a_record_that_does_not_parse(system: System) -> None:
    sealed = seal_to(system.agency.keys.public.public_key, b'{"sequence": Infinity}',
                     info=HANDOVER_INFO)  # fmt: skip
    with pytest.raises(HandoverError):
        system.agency.receive(sealed)
    (rejected,) = system.events.events(kind="agency.rejected")
    assert "Infinity" in rejected["reason"]
