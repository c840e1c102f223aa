"""infra/plane.py and infra/observer.py against both brokers (issue 11): events out in
order and once, a late observer catching up, a gap filled from the replay ring (or
reported when it is gone), controls in with their authorisation, answers in parts, and
an absent observer blocking nothing."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from infra.observer import Observer
from infra.plane import ControlError, ControlServer, Party, Plane
from wire import control, topics
from wire.control import ControlRefused, Request
from wire.events import Event, EventLog

ALICE = "alice@acme.phone"

MakeParty = Callable[..., Awaitable[Party]]


@pytest.fixture
async def party(broker: Any, accounts: Any) -> AsyncIterator[MakeParty]:
    """party(name, events=None, handlers=None, **kw) -> a started Party on the broker."""
    started: list[Party] = []

    async def make(name: str, events: EventLog | None = None, **kw: Any) -> Party:
        acc = accounts(name)
        broker.add_account(acc)
        await broker.wait_accounts_applied()
        p = Party(name, kw.pop("kind", name), acc.password, broker.host, broker.port,
                  events if events is not None else EventLog(), **kw)
        await p.start()
        started.append(p)
        return p

    yield make
    for p in reversed(started):
        await p.stop()


@pytest.fixture
async def observer(broker: Any, accounts: Any) -> AsyncIterator[Callable[[], Awaitable[Observer]]]:
    made: list[Observer] = []

    async def make() -> Observer:
        acc = accounts("observer")
        broker.add_account(acc)
        await broker.wait_accounts_applied()
        obs = Observer(broker.host, broker.port, acc.password)
        await obs.start()
        made.append(obs)
        return obs

    yield make
    for o in made:
        await o.stop()


def kinds(log: EventLog, svc: str) -> list[str]:
    return [e["kind"] for e in log.events() if e.get("svc") == svc]


async def test_events_reach_the_observer_in_order_once_each(
    party: MakeParty, observer: Callable[[], Awaitable[Observer]]
) -> None:
    obs = await observer()
    events = EventLog()
    await party("vendor", events)
    for i in range(450):  # more than two batches' worth
        events.emit("vendor", "service.ready", n=i)
    await obs.wait(lambda: obs.seen("vendor") >= 450, timeout=10)
    got = [e for e in obs.mirror.events() if e.get("svc") == "vendor"]
    assert [e["n"] for e in got] == list(range(450))
    assert all(e["actor"] == "vendor" and e["kind"] == "service.ready" for e in got)
    # The same event as the service emitted it, plus the service it came from.
    assert set(got[0]) == {"t", "actor", "kind", "n", "svc"}


async def test_a_late_observer_catches_up_through_hello_and_replay(
    party: MakeParty, observer: Callable[[], Awaitable[Observer]]
) -> None:
    events = EventLog()
    await party("vendor", events)
    for i in range(30):
        events.emit("vendor", "service.ready", n=i)
    await asyncio.sleep(0.2)  # published to nobody: gone from the broker
    obs = await observer()
    await obs.wait(lambda: obs.seen("vendor") >= 30, timeout=10)
    assert [e["n"] for e in obs.mirror.events() if e.get("svc") == "vendor"] == list(range(30))
    events.emit("vendor", "service.ready", n=30)
    await obs.wait(lambda: obs.seen("vendor") >= 31, timeout=10)
    assert obs.services["vendor"].missing == 0


async def test_a_lost_batch_is_asked_for_again_and_filled(
    party: MakeParty, observer: Callable[[], Awaitable[Observer]]
) -> None:
    obs = await observer()
    events = EventLog()
    vendor = await party("vendor", events)
    publisher = vendor.plane.publisher
    assert publisher is not None
    events.emit("vendor", "service.ready", n=0)
    await obs.wait(lambda: obs.seen("vendor") >= 1)
    # The next batch never leaves (as if the buffer had dropped it) ...
    real = publisher._transport
    publisher._transport = None
    events.emit("vendor", "service.ready", n=1)
    events.emit("vendor", "service.ready", n=2)
    publisher.flush()
    publisher._unsent.clear()
    publisher._transport = real
    # ... and the one after it shows the jump.
    events.emit("vendor", "service.ready", n=3)
    await obs.wait(lambda: obs.seen("vendor") >= 4, timeout=10)
    assert [e["n"] for e in obs.mirror.events() if e.get("svc") == "vendor"] == [0, 1, 2, 3]
    assert not obs.mirror.events(kind="plane.gap")


async def test_a_gap_no_longer_kept_is_reported_and_passed(
    party: MakeParty, observer: Callable[[], Awaitable[Observer]]
) -> None:
    obs = await observer()
    events = EventLog()
    vendor = await party("vendor", events)
    publisher = vendor.plane.publisher
    assert publisher is not None
    publisher._ring = type(publisher._ring)(maxlen=3)
    real = publisher._transport
    publisher._transport = None
    for i in range(10):
        events.emit("vendor", "service.ready", n=i)
    publisher.flush()
    publisher._unsent.clear()
    publisher._transport = real
    events.emit("vendor", "service.ready", n=10)
    await obs.wait(lambda: obs.seen("vendor") >= 11, timeout=10)
    got = [e["n"] for e in obs.mirror.events() if e.get("svc") == "vendor"
           and e["kind"] == "service.ready"]
    assert got == [8, 9, 10]  # the ring kept the last three
    [gap] = obs.mirror.events(kind="plane.gap")
    assert (gap["svc"], gap["missing_from"], gap["missing_to"]) == ("vendor", 1, 8)


async def test_controls_are_authorised_by_the_sender_the_topic_names(
    party: MakeParty,
) -> None:
    court_events = EventLog()

    async def verify(request: Request) -> dict[str, Any]:
        return {"ok_for": request.sender}

    court = await party("court", court_events, handlers={"ledger.verify": verify})
    lab = await party("lab", publish_events=False)
    alice = await party(ALICE, kind="device")
    answer = await lab.call("court", "ledger.verify")
    assert answer["ok"] is True and answer["ok_for"] == "lab"
    with pytest.raises(ControlError) as refused:
        await alice.call("court", "ledger.verify")
    assert refused.value.reason == (
        "ledger.verify may only be given by the lab; you are alice@acme.phone (device)"
    )
    with pytest.raises(ControlError, match="not something court"):
        await lab.call("court", "li.set", mode="off")
    await asyncio.sleep(0.05)
    accepted = court_events.events(kind="control.accepted")
    refused_events = court_events.events(kind="control.refused")
    assert [(e["op"], e["sender"]) for e in accepted] == [("ledger.verify", "lab")]
    assert [(e["op"], e["sender"]) for e in refused_events] == [
        ("ledger.verify", ALICE), ("li.set", "lab")]
    assert court is not None


async def test_a_handler_may_refuse_and_may_call_another_party(party: MakeParty) -> None:
    async def make_build(request: Request) -> dict[str, Any]:
        if request.args["name"] == "bad":
            raise ControlRefused("no such build")
        return {"version": 2}

    await party("vendor", handlers={"build.make": make_build})

    async def mandate(request: Request) -> dict[str, Any]:
        # A control's handler calling another party (its reader is not blocked).
        built = await tap.call("vendor", "build.make", name=request.args["backdoor"])
        return {"build": built["version"]}

    tap = await party("tap", handlers={"mandate.set": mandate})
    lab = await party("lab", publish_events=False)
    assert (await lab.call("tap", "mandate.set", backdoor="escrow"))["build"] == 2
    with pytest.raises(ControlError, match="no such build"):
        await tap.call("vendor", "build.make", name="bad")


async def test_a_large_answer_travels_in_parts(party: MakeParty) -> None:
    big = ["x" * 1000] * 2000  # about 2 MB: over the brokers' packet limit as one message

    async def breach(request: Request) -> dict[str, Any]:
        return {"envelopes": big}

    await party("relay", handlers={"breach.store": breach})
    attacker = await party("attacker")
    answer = await attacker.call("relay", "breach.store")
    assert answer["envelopes"] == big


async def test_an_absent_observer_blocks_nothing(party: MakeParty) -> None:
    async def verify(request: Request) -> dict[str, Any]:
        return {}

    events = EventLog(keep=False)
    court = await party("court", events, handlers={"ledger.verify": verify})
    lab = await party("lab", publish_events=False)
    started = time.monotonic()
    for i in range(20_000):
        events.emit("court", "service.ready", n=i)
    emitting = time.monotonic() - started
    # Emitting never waits for the broker, nobody reads, and the controls still answer.
    await lab.call("court", "ledger.verify", timeout=5)
    assert emitting < 5.0
    publisher = court.plane.publisher
    assert publisher is not None and publisher.seq >= 20_000
    assert len(publisher._unsent) <= publisher.max_unsent


async def test_a_repeated_request_is_answered_again_not_carried_out_twice() -> None:
    sent: list[tuple[str, bytes]] = []
    runs = 0

    async def verify(request: Request) -> dict[str, Any]:
        nonlocal runs
        runs += 1
        return {"n": runs}

    server = ControlServer("court", lambda t, p: sent.append((t, p)), EventLog(),
                           {"ledger.verify": verify})
    body = control.request("00ff00ff", "ledger.verify", {})
    server.handle("lab", body)
    await asyncio.sleep(0.01)
    server.handle("lab", body)
    await asyncio.sleep(0.01)
    assert runs == 1
    assert [t for t, _ in sent] == [topics.to_topic("lab", "court", "ans")] * 2
    assert sent[0][1] == sent[1][1] and json.loads(sent[0][1])["n"] == 1


def test_route_takes_only_the_plane_s_topics() -> None:
    plane = Plane("court", "court", EventLog())
    assert not plane.route("doormat/in/court/dir", b"")
    assert plane.route("doormat/hello", b"{}")
    assert plane.route("doormat/to/someone/lab/ans", b"{}")  # not ours: dropped


Listener = Callable[[Event], None]
