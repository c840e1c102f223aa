"""What the relay publishes fits the brokers' packet limit (issue 12, point 6): a packet
over ``wire.topics.MAX_PACKET_BYTES`` makes the broker disconnect its sender, and the
relay is the sender of every answer, forward and record.

* the largest forwards and records: an envelope of MAX_ENVELOPE_BYTES, the journal
  wrapper of a record that size, a mirror record and an X3 record (the envelope in
  base64, about 88 KB);
* the largest directory answer: a monitor answer of ``max_monitor_entries`` (512)
  entries, with room for inclusion proofs of a log of 2**32 entries;
* anything larger (a user with very many devices) is refused with a reason instead of
  published (``relay.actions.reply``).
"""

from __future__ import annotations

import base64
import json
import math
import os
from pathlib import Path
from typing import Any

from relay.actions import MAX_ANSWER_BYTES, Limits, Publish, reply
from relay.li import LawfulIntercept
from relay.router import Relay
from relay.store import Store
from wire.envelope import MAX_ENVELOPE_BYTES, Envelope
from wire.events import EventLog
from wire.topics import MAX_PACKET_BYTES

A = "alice@acme.phone"


def _b64(b: bytes) -> str:
    return base64.b64encode(b).decode()


def _packet(p: Publish) -> int:
    """The PUBLISH as the broker counts it (remaining length + 1): topic, packet id, payload."""
    return 1 + 2 + len(p.topic.encode()) + 2 + len(p.payload)


def _dir(op: str, **fields: Any) -> bytes:
    return json.dumps({"req": "r", "op": op, **fields}).encode()


def test_forwards_and_records_of_the_largest_envelope_fit(tmp_path: Path) -> None:
    s = Store(tmp_path / "relay.db")
    events = EventLog()
    li = LawfulIntercept(events, "blanket")
    relay = Relay(s, events, observers=[li])
    for dev in (A, "bob@acme.phone"):
        relay.handle("doormat/out/acme/dir", _dir("enrol", user=dev.rsplit(".", 1)[0], device=dev))
    sender = "bob@acme.phone"
    # The largest envelope the relay takes: a body as long as 64 KiB allows.
    small = len(Envelope("e" * 32, sender, A, 1, os.urandom(41), b"x").encode())
    body = os.urandom((MAX_ENVELOPE_BYTES - small) * 3 // 4 - 3)
    raw = Envelope("e" * 32, sender, A, 1, os.urandom(41), body).encode()
    assert MAX_ENVELOPE_BYTES - 16 < len(raw) <= MAX_ENVELOPE_BYTES
    actions = relay.handle(f"doormat/out/{sender}/msg", raw)
    actions += relay.handle(f"doormat/out/{sender}/archive", os.urandom(MAX_ENVELOPE_BYTES))
    published = [a for a in actions if isinstance(a, Publish)]
    kinds = {p.topic.rsplit("/", 1)[-1] for p in published}
    assert {"msg", "mirror", "archive"} <= kinds, kinds
    assert max(_packet(p) for p in published) <= MAX_PACKET_BYTES
    assert max(_packet(p) for p in published) < 100_000  # far below, in fact
    li.close()


def test_the_largest_monitor_answer_fits_with_room_for_deep_proofs(tmp_path: Path) -> None:
    limits = Limits()
    relay = Relay(Store(tmp_path / "relay.db"), EventLog(keep=False), limits=limits)
    n = limits.max_monitor_entries  # one log entry each
    for i in range(n):
        dev = f"{'a' * 32}@acme.{'d' * 28}{i:04d}"
        relay.handle("doormat/out/acme/dir", _dir("enrol", user=f"{'a' * 32}@acme", device=dev))
        relay.handle(f"doormat/out/{dev}/dir", _dir(
            "publish", identity=_b64(os.urandom(64)),
            signed_prekey={"id": 1, "key": _b64(os.urandom(32)), "sig": _b64(os.urandom(64))},
            one_time_prekeys=[{"id": 1, "key": _b64(os.urandom(32))}]))  # fmt: skip
    asker = f"{'a' * 32}@acme.{'d' * 28}0000"
    (answer,) = [a for a in relay.handle(f"doormat/out/{asker}/dir",
                                         _dir("monitor", user=f"{'a' * 32}@acme"))
                 if isinstance(a, Publish)]  # fmt: skip
    body = json.loads(answer.payload)
    assert body["ok"] is True, body
    entries = len(body["kt"]["entries"])
    assert entries == limits.max_monitor_entries
    depth = math.ceil(math.log2(relay.kt.size))
    # A log of 2**32 entries would add (32 - depth) hashes (44 base64 characters and
    # the JSON around them) to every proof.
    worst = len(answer.payload) + entries * (32 - depth) * 47
    assert worst <= MAX_ANSWER_BYTES, (len(answer.payload), depth, worst)


def test_an_answer_too_large_for_a_packet_is_refused_instead() -> None:
    out: list[Any] = []
    reply(out, A, {"req": "q", "ok": True, "op": "devices", "devices": ["x" * 100] * 20_000})
    (p,) = out
    assert len(p.payload) < 1000 and _packet(p) <= MAX_PACKET_BYTES
    answer = json.loads(p.payload)
    assert answer["ok"] is False and answer["req"] == "q" and answer["op"] == "devices"
    assert f"over the relay's {MAX_ANSWER_BYTES}-byte limit" in answer["error"]
    out.clear()
    reply(out, A, {"req": "q", "ok": True, "devices": ["x"]})
    assert json.loads(out[0].payload)["ok"] is True
