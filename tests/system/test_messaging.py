"""End-to-end: devices, enterprises and the relay over a real broker (both kinds)."""

from __future__ import annotations

import asyncio
import sqlite3
from collections import Counter

from doormat.system import System
from wire.envelope import parse

ALICE_PHONE = "alice@acme.phone"
ALICE_LAPTOP = "alice@acme.laptop"
BOB = "bob@acme.phone"
CAROL = "carol@globex.phone"


def inbound(system: System, device: str) -> list[tuple[str, str]]:
    return [(h.device, h.id) for h in system.devices[device].history() if h.direction == "in"]


async def test_fan_out_to_every_device_of_recipient_and_sender(system: System) -> None:
    d = await system.send(CAROL, "alice@acme", "hello alice, both your devices")
    assert await system.wait_delivered(d)
    assert sorted(d.sent.devices) == [ALICE_LAPTOP, ALICE_PHONE]
    d2 = await system.send(ALICE_PHONE, "carol@globex", "hi carol")
    assert await system.wait_delivered(d2)
    # alice's laptop sees what her phone sent: the sender's other devices get a copy.
    assert sorted(d2.sent.devices) == [ALICE_LAPTOP, CAROL]
    texts = [h.text for h in system.devices[ALICE_LAPTOP].history()]
    assert b"hi carol" in texts and b"hello alice, both your devices" in texts


async def test_offline_device_gets_its_messages_exactly_once_after_reconnect(
    system: System,
) -> None:
    # Open the session first, so bob's device has state worth keeping across the restart.
    first = await system.send(ALICE_PHONE, "bob@acme", "before")
    assert await system.wait_delivered(first)
    await system.stop_device(BOB)
    held = [await system.send(ALICE_PHONE, "bob@acme", f"while away {i}") for i in range(5)]
    assert all(BOB not in d.delivered_to for d in held)
    await system.start_device(BOB)
    for d in held:
        assert await system.wait_delivered(d)
    # Ask the relay to re-send everything it still holds, several times over: at-least-once
    # copies arrive, the application sees each message once.
    for _ in range(3):
        await system.devices[BOB]._link.request("sync")
    await asyncio.sleep(0.3)
    got = Counter(inbound(system, BOB))
    assert all(n == 1 for n in got.values()), got
    assert {(ALICE_PHONE, d.sent.id) for d in [first, *held]} <= set(got)
    # And the relay dropped them once acknowledged.
    assert system.relay is not None
    assert system.relay.store.pending_count() == 0


async def test_restarted_device_continues_its_sessions(system: System) -> None:
    a = await system.send(ALICE_PHONE, "bob@acme", "one")
    assert await system.wait_delivered(a)
    # Until bob answers, alice's messages carry the X3DH prekey message (as in Signal).
    reply = await system.send(BOB, "alice@acme", "one, answered")
    assert await system.wait_delivered(reply)
    await system.stop_device(ALICE_PHONE)
    await system.start_device(ALICE_PHONE)
    b = await system.send(ALICE_PHONE, "bob@acme", "two")
    assert await system.wait_delivered(b)
    c = await system.send(BOB, "alice@acme", "three")
    assert await system.wait_delivered(c)
    # No new X3DH: the restarted phone kept its ratchet with bob.
    assert system.relay is not None
    envs = [parse(raw) for raw in system.relay.captured()]
    second = [e for e in envs if e.id == b.sent.id and e.recipient == BOB]
    assert second and second[0].prekey is None


async def test_relay_reads_nothing_and_holds_no_plaintext(system: System) -> None:
    texts = [f"secret number {i} about the merger" for i in range(6)]
    senders = [ALICE_PHONE, BOB, CAROL]
    for i, text in enumerate(texts):
        d = await system.send(senders[i % 3], "dave@globex", text)
        assert await system.wait_delivered(d)
    assert system.relay is not None
    # The relay's own row, computed by the relay itself (it holds no key).
    assert system.observer is not None
    [row] = await system.observer.measure("relay")
    assert len(row.captured) == len(texts)
    assert row.readable == [] and row.keys_held == []
    # The converse of readable == 0: no plaintext is anywhere in the relay's bytes.
    db = system.state_dir / "relay.sqlite"
    blob = b"".join(
        bytes(v) if isinstance(v, (bytes, memoryview)) else str(v).encode()
        for table in ("sqlite_master",)
        for row in sqlite3.connect(db).execute(f"SELECT * FROM {table}")
        for v in row
        if v is not None
    )
    raw_store = db.read_bytes() + b"".join(
        p.read_bytes() for p in db.parent.glob("relay.sqlite*") if p != db
    )
    for text in texts:
        assert text.encode() not in raw_store
        assert text.encode() not in blob
    relay_events = [e for e in system.events.events() if e["actor"] == "relay"]
    assert relay_events
    for text in texts:
        assert all(text not in str(e) for e in relay_events)
