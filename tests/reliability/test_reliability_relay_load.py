"""The relay's load and overload machinery (relay/intake.py, Store.batch, rate limits).

Unit tests of the pieces: the intake's fairness and acknowledgement order, events held
until a group commit, token buckets, savepoints inside a batch, the router's per-device
rate limit and how it reports; then the service end to end on the embedded broker: a
burst from one device is group-committed, every envelope delivered, every event present.
"""

from __future__ import annotations

import io
import json
import os
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from relay.intake import DeferredEvents, Intake, TokenBuckets, item_of
from relay.router import Ack, Event, Limits, Publish, Relay
from relay.store import Store
from wire.envelope import Envelope
from wire.events import EventLog

A, B, C = "alice@acme.phone", "bob@globex.phone", "carol@globex.phone"


def env(sender: str, recipient: str, n: int = 0) -> bytes:
    return Envelope(
        id=os.urandom(16).hex(), sender=sender, recipient=recipient, ts=1, header=b"h" * 41,
        body=os.urandom(64),
    ).encode()  # fmt: skip


# -- the intake ------------------------------------------------------------------------------


def test_intake_serves_owners_round_robin_each_in_its_own_order() -> None:
    intake = Intake()
    arrivals = [("f", 1), ("f", 2), ("f", 3), ("f", 4), ("a", 1), ("f", 5), ("b", 1), ("a", 2)]
    for owner, n in arrivals:
        intake.add(item_of(f"doormat/out/{owner}/msg", str(n).encode()))
    order = [(i.owner, int(i.payload)) for i in intake.take(100)]
    # one per owner per turn: the flooder "f" does not stand in front of a and b
    assert order[:3] == [("f", 1), ("a", 1), ("b", 1)]
    for owner in "fab":
        mine = [n for o, n in order if o == owner]
        assert mine == sorted(mine)
    assert len(intake) == 0


def test_intake_acknowledges_in_arrival_order_only() -> None:
    intake = Intake()
    items = [item_of(f"doormat/out/{o}/msg", b"") for o in ("f", "f", "a")]
    for it in items:
        intake.add(it)
    first = intake.take(2)  # f#1, a#1 (round-robin)
    assert [i.owner for i in first] == ["f", "a"]
    intake.done([first[1]])  # a's message handled, f#1 not yet
    assert list(intake.ackable()) == []
    intake.done([first[0]])
    assert list(intake.ackable()) == [items[0]]  # f#1; f#2 (arrived before a) is not done
    intake.done(intake.take(1))
    assert list(intake.ackable()) == [items[1], items[2]]
    assert intake.unacked == 0


def test_item_of_odd_topics() -> None:
    assert (item_of("a/b", b"").owner, item_of("a/b", b"").kind) == ("", "b")
    assert item_of("doormat/out/x/ack", b"").kind == "ack"


# -- events held until the commit ----------------------------------------------------------------


def test_deferred_events_pass_through_hold_and_discard() -> None:
    inner = EventLog()
    events = DeferredEvents(inner)
    events.emit("relay", "one")
    with events.held():
        events.emit("relay", "two")
        assert [e["kind"] for e in inner.events()] == ["one"]
    assert [e["kind"] for e in inner.events()] == ["one", "two"]
    with pytest.raises(RuntimeError), events.held():
        events.emit("relay", "rolled back")
        raise RuntimeError("the commit failed")
    assert [e["kind"] for e in inner.events()] == ["one", "two"]
    assert events.events(kind="two")  # reads go to the inner log


def test_json_lines_log_flushes_once_for_a_held_batch() -> None:
    class Sink(io.StringIO):
        flushes = 0

        def flush(self) -> None:
            self.flushes += 1
            super().flush()

    sink = Sink()
    events = DeferredEvents(EventLog(sink, keep=False))
    with events.held():
        for i in range(5):
            events.emit("relay", "x", i=i)
    assert sink.flushes == 1
    assert [json.loads(line)["i"] for line in sink.getvalue().splitlines()] == list(range(5))


# -- token buckets ------------------------------------------------------------------------------


def test_token_bucket_burst_then_rate_then_refill() -> None:
    b = TokenBuckets(rate=10, burst=5)
    assert [b.allow("k", 0) for _ in range(6)] == [True] * 5 + [False]
    assert b.allow("k", 50) is False  # half a token
    assert b.allow("k", 100) is True  # one token after 100 ms at 10/s
    assert [b.allow("k", 10_000) for _ in range(6)] == [True] * 5 + [False]  # capped at burst
    assert b.allow("other", 0) is True  # per key
    assert TokenBuckets(rate=0, burst=0).allow("k", 0) is True  # 0 disables


def test_token_buckets_forget_idle_keys() -> None:
    b = TokenBuckets(rate=100, burst=10, max_keys=10)
    for i in range(11):
        b.allow(i, 0)
    b.allow("late", 10_000)  # everyone else has refilled: forgotten
    assert len(b._buckets) == 1


# -- group commit -------------------------------------------------------------------------------


def test_store_batch_commits_once_and_savepoints_each_method(tmp_path: Path) -> None:
    store = Store(tmp_path / "r.sqlite")
    other = sqlite3.connect(tmp_path / "r.sqlite")
    store.directory.enrol(A, "alice@acme", "acme", 1)
    with store.batch():
        assert store.accept(A, "a" * 32, B, b"x", 1) is not None
        with pytest.raises(sqlite3.IntegrityError), store._tx() as db:  # a method that fails
            db.execute("INSERT INTO envelopes (sender) VALUES ('only a sender')")
        assert store.accept(A, "b" * 32, B, b"y", 1) is not None
        # not visible to another connection before the commit
        assert other.execute("SELECT count(*) FROM envelopes").fetchone()[0] == 0
    assert other.execute("SELECT count(*) FROM envelopes").fetchone()[0] == 2
    with pytest.raises(ZeroDivisionError), store.batch():
        store.accept(A, "c" * 32, B, b"z", 1)
        raise ZeroDivisionError
    assert other.execute("SELECT count(*) FROM envelopes").fetchone()[0] == 2
    with pytest.raises(RuntimeError), store.batch(), store.batch():
        pass
    other.close()
    store.close()


# -- the router's per-device rate limit -----------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000

    def __call__(self) -> int:
        return self.now


def _relay(tmp_path: Path, limits: Limits, clock: Clock) -> tuple[Relay, EventLog]:
    events = EventLog()
    relay = Relay(Store(tmp_path / "r.sqlite"), events, limits=limits, clock=clock)
    for ent, dev in (("acme", A), ("globex", B), ("globex", C)):
        body = {"req": "e", "op": "enrol", "user": dev.rsplit(".", 1)[0], "device": dev}
        out = relay.handle(f"doormat/out/{ent}/dir", json.dumps(body).encode())
        assert json.loads(next(a for a in out if isinstance(a, Publish)).payload)["ok"]
    return relay, events


def test_rate_limit_refuses_over_the_burst_and_reports_once_per_second(tmp_path: Path) -> None:
    clock = Clock()
    relay, events = _relay(tmp_path, Limits(device_rate=10, device_burst=5), clock)
    results = [relay.handle(f"doormat/out/{A}/msg", env(A, B)) for _ in range(40)]
    accepted = [
        r for r in results if any(isinstance(a, Event) and a.kind == "relay.accepted" for a in r)
    ]
    assert len(accepted) == 5
    assert all(isinstance(r[-1], Ack) for r in results)  # every input is finished with
    rejected = events.events(kind="relay.rejected")
    assert len(rejected) == 1 and rejected[0]["reason"].startswith("rate limit")
    replies = [a for r in results for a in r if isinstance(a, Publish) and a.topic.endswith("/dir")]
    assert len(replies) == 1 and json.loads(replies[0].payload)["ok"] is False
    # another device is not affected by alice's flood
    out = relay.handle(f"doormat/out/{C}/msg", env(C, B))
    assert any(isinstance(a, Event) and a.kind == "relay.accepted" for a in out)
    # a second later: tokens again, and the refusals since the last report are counted
    clock.now += 1000
    relay.handle(f"doormat/out/{A}/msg", env(A, B))
    for _ in range(20):
        relay.handle(f"doormat/out/{A}/msg", env(A, B))
    rejected = events.events(kind="relay.rejected")
    assert len(rejected) == 2 and rejected[1]["refused"] >= 34  # 34 + this second's first
    # acks and enterprise requests are never limited
    for _ in range(50):
        out = relay.handle(f"doormat/out/{B}/ack", json.dumps({"from": A, "id": "e" * 32}).encode())
        assert any(isinstance(a, Event) and a.kind == "relay.acked" for a in out)


def test_default_limits_let_an_honest_burst_through(tmp_path: Path) -> None:
    clock = Clock()
    relay, events = _relay(tmp_path, Limits(), clock)
    for _ in range(2000):  # the SIGKILL test's burst from one device
        relay.handle(f"doormat/out/{A}/msg", env(A, B))
    assert len(events.events(kind="relay.accepted")) == 2000
    assert events.events(kind="relay.rejected") == []


# -- the service, end to end ------------------------------------------------------------------


@pytest.mark.mosquitto
async def test_service_group_commits_a_burst_and_delivers_everything(
    tmp_path: Path, make_broker: Any, accounts: Any
) -> None:
    import asyncio

    import aiomqtt

    from relay.service import RelayService

    accs = [accounts(n) for n in ("relay", "acme", "globex", A, B, C)]
    # Mosquitto: the embedded broker loses pipelined publishes (test_reliability_brokers).
    broker = await make_broker("mosquitto", accs)
    events = EventLog()
    service = RelayService(broker.host, broker.port, accounts("relay").password,
                           tmp_path / "r.sqlite", events)  # fmt: skip
    await service.start()
    try:
        for ent, dev in (("acme", A), ("globex", B), ("globex", C)):
            service.relay.store.directory.enrol(dev, dev.rsplit(".", 1)[0], ent, 1)
        got: dict[str, list[str]] = {B: [], C: []}

        async def receiver(name: str, n: int) -> None:
            async with aiomqtt.Client(
                broker.host, broker.port, username=name, password=accounts(name).password,
                identifier=name,
            ) as c:  # fmt: skip
                await c.subscribe(f"doormat/in/{name}/msg", qos=1)
                ready.set()
                async with asyncio.timeout(60):
                    async for m in c.messages:
                        got[name].append(json.loads(bytes(m.payload))["id"])  # type: ignore[arg-type]
                        if len(set(got[name])) == n:
                            return

        ready = asyncio.Event()
        flood = [env(A, B) for _ in range(600)]
        honest = [env(C, B) for _ in range(5)]
        task = asyncio.create_task(receiver(B, len(flood) + len(honest)))
        await ready.wait()
        async with aiomqtt.Client(broker.host, broker.port, username=A,
                                  password=accounts(A).password, identifier=A) as a, \
                aiomqtt.Client(broker.host, broker.port, username=C,
                               password=accounts(C).password, identifier=C) as c:  # fmt: skip
            sends = [a.publish(f"doormat/out/{A}/msg", e, qos=1) for e in flood]
            sends += [c.publish(f"doormat/out/{C}/msg", e, qos=1) for e in honest]
            await asyncio.gather(*sends)
        await task
        want = {json.loads(e)["id"] for e in flood + honest}
        assert set(got[B]) == want
        accepted = events.events(kind="relay.accepted")
        assert {e["id"] for e in accepted} == want and len(accepted) == len(want)
        # every accepted envelope is committed (its event says so) before it goes out
        assert service.relay.store.pending_count() <= len(want)
    finally:
        await service.stop()
