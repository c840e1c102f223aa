"""Refusals by the relay reach the sending device's user (clients/device.py, "Refusals").

A relay process with a small per-device rate limit (``--device-rate``): a device that
sends faster than that is told (``device.undelivered``, retry), holds back, re-sends,
and every message still arrives exactly once. An envelope the relay refuses for good
(unknown recipient) is recorded as undelivered in the sender's history and leaves its
outbox.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import subprocess
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from clients.device import Device
from clients.enterprise import EnterpriseServer
from doormat.broker import start_broker
from doormat.broker.accounts import save_accounts
from doormat.cast import default_cast, enrol
from tests.support.polling import until
from tests.support.processes import broker_kind, relay_argv
from wire.envelope import Envelope
from wire.events import EventLog, now_ms

CAROL = "carol@globex.phone"
DAVE = "dave@globex.phone"
RATE, BURST = 20, 10


@dataclass
class World:
    events: EventLog
    devices: dict[str, Device]
    relay_events: Path


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    kind = broker_kind()
    cast = default_cast()
    enrolment = enrol(cast)
    accounts = tmp_path / "accounts.json"
    save_accounts(accounts, enrolment.accounts)
    events = EventLog()
    relay_events = tmp_path / "relay.jsonl"
    async with start_broker(kind, enrolment.accounts, tmp_path / "broker") as broker:
        relay = subprocess.Popen(
            relay_argv(
                f"mqtt://{broker.host}:{broker.port}", tmp_path / "relay.sqlite", relay_events,
                "--accounts", str(accounts),
                "--device-rate", str(RATE), "--device-burst", str(BURST),
            ),
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )  # fmt: skip
        started: list[Any] = []
        try:
            await until(relay_events.exists, 20, "the relay to start")
            await until(lambda: "relay.connected" in relay_events.read_text(), 20, "connect")
            server = EnterpriseServer(
                enrolment.enterprises["globex"],
                enrolment.account("globex").password,
                broker.host, broker.port, events, tmp_path,
            )  # fmt: skip
            await server.start()
            started.append(server)
            devices = {}
            for dev_id in (CAROL, DAVE):
                dev = Device(
                    enrolment.credentials[dev_id], broker.host, broker.port,
                    tmp_path / f"{dev_id}.sqlite", events, device_list_ttl=1e9,
                )  # fmt: skip
                await dev.start()
                started.append(dev)
                devices[dev_id] = dev
            yield World(events, devices, relay_events)
        finally:
            for thing in reversed(started):
                await thing.stop()
            relay.send_signal(signal.SIGTERM)
            try:
                relay.wait(timeout=15)
            except subprocess.TimeoutExpired:
                relay.kill()
                relay.wait()


def _shown(w: World, device: str) -> Counter[tuple[str, str]]:
    return Counter(
        (e["from"], e["id"]) for e in w.events.events(kind="device.received", actor=device)
    )


@pytest.mark.timeout(120)
async def test_rate_limited_sender_is_told_resends_and_everything_arrives_once(
    world: World,
) -> None:
    carol = world.devices[CAROL]
    first = await carol.send("dave@globex", "hello")  # device list cached, session open
    await until(lambda: (CAROL, first.id) in _shown(world, DAVE), 20, "the first message")
    n = 80  # four times the rate, eight times the burst, all at once
    sent = await asyncio.gather(*(carol.send("dave@globex", f"burst {k}") for k in range(n)))
    want = {(CAROL, first.id)} | {(CAROL, s.id) for s in sent}
    await until(lambda: set(_shown(world, DAVE)) >= want, 60, "every message at dave")
    await asyncio.sleep(1.5)  # a late duplicate would be shown now
    shown = _shown(world, DAVE)
    assert set(shown) == want and all(c == 1 for c in shown.values())

    told = world.events.events(kind="device.undelivered", actor=CAROL)
    assert told, "the sender was never told about the rate limit"
    assert all(e["retry"] and e["op"] == "msg" for e in told)
    assert all(str(e["reason"]).startswith("rate limit: over 20 per second") for e in told)
    # Reported at once for the first refusal after a quiet second; the ones after it in
    # that second are only counted (and re-sent all the same).
    assert told[0]["refused"] >= 1
    resent = world.events.events(kind="device.resent", actor=CAROL)
    assert resent and all(e["kinds"] == ["msg"] for e in resent)
    # The relay did refuse, and took each message exactly once in the end.
    relay_log = world.relay_events.read_text()
    assert '"relay.rejected"' in relay_log and "rate limit" in relay_log
    # Nothing is marked undelivered for good: a rate limit is not final.
    assert all(h.undelivered == () for h in carol.history())


@pytest.mark.timeout(60)
async def test_envelope_refused_for_good_is_recorded_as_undelivered(world: World) -> None:
    carol = world.devices[CAROL]
    first = await carol.send("dave@globex", "hello")
    await until(lambda: (CAROL, first.id) in _shown(world, DAVE), 20, "the first message")
    # What send() does for a device the directory listed but the relay does not know
    # (any more): seal, commit to history and outbox, publish.
    nobody = "nobody@globex.phone"
    sealed = carol.crypto.encrypt(DAVE, b"to nobody")
    msg_id = secrets.token_hex(16)
    env = Envelope(msg_id, CAROL, nobody, now_ms(), sealed.header, sealed.body).encode()
    carol._store.commit_outgoing(
        carol.crypto.to_bytes(), msg_id, "nobody@globex", CAROL, now_ms(), b"to nobody",
        [(nobody, env)],
    )  # fmt: skip
    await carol._link.publish("msg", env)
    carol._published(("msg", msg_id, nobody), env)
    await until(
        lambda: world.events.events(kind="device.undelivered", actor=CAROL), 20, "the refusal"
    )
    (told,) = world.events.events(kind="device.undelivered", actor=CAROL)
    assert told["id"] == msg_id and told["to"] == nobody and told["retry"] is False
    assert told["reason"] == "unknown recipient"
    (entry,) = [h for h in carol.history() if h.id == msg_id]
    assert entry.direction == "out" and entry.undelivered == ((nobody, "unknown recipient"),)
    assert all(h.undelivered == () for h in carol.history() if h.id != msg_id)
    # Out of the outbox: not re-sent on the next connection.
    assert all(mid != msg_id for _, mid, _, _ in carol._store.outbox())


@pytest.mark.timeout(60)
async def test_rate_limited_directory_requests_are_asked_again(world: World) -> None:
    carol = world.devices[CAROL]
    n = 40  # four times the burst, at once
    answers = await asyncio.wait_for(
        asyncio.gather(*(carol._link.request("devices", user="dave@globex") for _ in range(n))),
        30,  # without asking again, the refused ones would time out (15 s) and raise
    )
    assert all(a["ok"] and a["devices"] == [DAVE] for a in answers)
    told = world.events.events(kind="device.undelivered", actor=CAROL)
    assert told and all(e["op"] is None and e["retry"] for e in told)
