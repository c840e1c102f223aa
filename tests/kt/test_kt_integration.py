"""Key transparency over a real broker: a RelayService with its key file, devices on
real Links with real key material, a device-side DirectoryView verifying the relay's
real answers, the tap giving the ghost its keys over its own topic, the ghost reading
what a device sealed for it, the owner's device catching it, and a relay restart."""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from clients.crypto import DeviceCrypto, Sealed
from clients.kt import REASON_NOT_ENROLLED, DirectoryView
from infra.link import Link
from relay.service import RelayService
from wire.envelope import Envelope
from wire.events import EventLog

A, A2, B = "alice@acme.phone", "alice@acme.laptop", "bob@acme.phone"
ALICE, BOB, BG = "alice@acme", "bob@acme", "bob@acme.gov"


class Tap:
    """The government tap's account, speaking the wire protocol by hand."""

    def __init__(self, client: aiomqtt.Client) -> None:
        self.client = client
        self.answers: dict[str, dict[str, Any]] = {}
        self.ghost: asyncio.Queue[bytes] = asyncio.Queue()

    async def read(self) -> None:
        async for m in self.client.messages:
            payload = m.payload if isinstance(m.payload, bytes) else str(m.payload).encode()
            if str(m.topic) == "doormat/in/tap/ghost":
                await self.ghost.put(payload)
            elif str(m.topic) == "doormat/in/tap/dir":
                answer = json.loads(payload)
                self.answers[str(answer.get("req"))] = answer

    async def request(self, op: str, **fields: Any) -> dict[str, Any]:
        req = secrets.token_hex(6)
        body = json.dumps({"req": req, "op": op, **fields})
        await self.client.publish("doormat/out/tap/dir", body, qos=1)
        async with asyncio.timeout(10):
            while req not in self.answers:
                await asyncio.sleep(0.01)
        return self.answers.pop(req)


@contextlib.asynccontextmanager
async def tap_on(mqtt: Any, account: Any) -> AsyncIterator[Tap]:
    async with mqtt(account, clean_session=True) as client:
        await client.subscribe("doormat/in/tap/#", qos=1)
        tap = Tap(client)
        reader = asyncio.create_task(tap.read())
        try:
            yield tap
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
                await reader


async def test_device_view_verifies_real_answers_and_catches_the_ghost(
    broker: Any, accounts: Any, mqtt: Any, tmp_path: Path
) -> None:
    db = tmp_path / "relay.sqlite"
    service = RelayService(broker.host, broker.port, accounts("relay").password, db, EventLog())
    await service.start()
    links: dict[str, Link] = {}
    try:
        # the key devices pin is the one beside the store, and the one the service names
        vkey = (tmp_path / "relay.sqlite.kt-key.vkey").read_text().strip()
        assert vkey == service.directory_vkey
        async with Link("acme", accounts("acme").password, broker.host, broker.port) as acme:
            for dev, user in ((A, ALICE), (A2, ALICE), (B, BOB)):
                await acme.request("enrol", user=user, device=dev)
        crypto = {d: DeviceCrypto.create(d, one_time_prekeys=3) for d in (A, A2, B)}
        for dev in (A, A2, B):
            links[dev] = Link(dev, accounts(dev).password, broker.host, broker.port)
            await links[dev].start()
            await links[dev].request("publish", **crypto[dev].publish_material())

        va = DirectoryView(vkey, owner=A)
        answer = await links[A].request("devices", user=BOB)
        assert va.verify_lookup(answer["kt"], answer["devices"]).devices == [B]
        answer = await links[A].request("bundles", user=ALICE, since=va.since)
        result = va.verify_lookup(answer["kt"], answer["bundles"])
        assert result.verified == [(A2, crypto[A2].publish_material()["identity"])]
        vb = DirectoryView(vkey, owner=B)
        assert vb.monitor(await links[B].request("monitor", user=BOB), {B}) == []

        # the ghost back door: the tap gives bob a government device, over its own topic
        async with tap_on(mqtt, accounts("tap")) as tap:
            refused = await tap.request("enrol", user=BOB, device=BG)
            assert refused["ok"] is False and refused["error"] == "ghost mode is off"
            service.relay.set_ghost(True)
            ghost = DeviceCrypto.create(BG, one_time_prekeys=3)
            assert (await tap.request("enrol", user=BOB, device=BG))["ok"] is True
            published = await tap.request("publish", device=BG, **ghost.publish_material())
            assert published["ok"] is True, published

            # an unmodified client fans out to it "as to any device": proven like any
            answer = await links[A].request("bundles", user=BOB, since=va.since)
            result = va.verify_lookup(answer["kt"], answer["bundles"])
            assert result.devices == [BG, B] and result.refused == []
            bundle = next(b for b in answer["bundles"] if b["device"] == BG)
            crypto[A].start_session(BG, bundle)
            sealed = crypto[A].encrypt(BG, b"meet at noon")
            env = Envelope(
                id=secrets.token_hex(16),
                sender=A,
                recipient=BG,
                ts=1,
                header=sealed.header,
                body=sealed.body,
                prekey=sealed.prekey,
            )
            await links[A].publish("msg", env.encode())
            async with asyncio.timeout(10):
                raw = await tap.ghost.get()
            got = json.loads(raw)
            assert got["id"] == env.id
            opened = ghost.decrypt(A, Sealed(header=env.header, body=env.body, prekey=env.prekey))
            assert opened == b"meet at noon"  # what the ghost costs
            assert service.store.pending_count() == 0

        # bob's own device, monitoring its user, raises the alarm
        (alarm,) = vb.monitor(await links[B].request("monitor", user=BOB, since=vb.since), {B})
        assert (alarm.user, alarm.device, alarm.reason) == (BOB, BG, REASON_NOT_ENROLLED)
        size = va.since
    finally:
        for link in links.values():
            await link.stop()
        await service.stop()

    # a restarted relay: same key file, same tree, same checkpoint; the views accept it
    again = RelayService(broker.host, broker.port, accounts("relay").password, db, EventLog())
    assert again.directory_vkey == vkey
    await again.start()
    try:
        async with Link(A, accounts(A).password, broker.host, broker.port) as link:
            answer = await link.request("devices", user=ALICE, since=size)
            assert va.verify_lookup(answer["kt"], answer["devices"]).devices == [A2, A]
            assert va.since == size and answer["kt"]["checkpoint"] == va.gossip()
    finally:
        await again.stop()


@pytest.mark.parametrize("broker", ["embedded"], indirect=True)
async def test_relay_answers_carry_kt_to_the_raw_wire(
    broker: Any, accounts: Any, mqtt: Any, tmp_path: Path
) -> None:
    """What a device receives is plain JSON any client can check: the kt object's shape
    on the wire (documented in docs/protocol.md)."""
    service = RelayService(
        broker.host, broker.port, accounts("relay").password, tmp_path / "r.db", EventLog()
    )
    await service.start()
    try:
        async with Link("acme", accounts("acme").password, broker.host, broker.port) as acme:
            await acme.request("enrol", user=ALICE, device=A)
        async with Link(A, accounts(A).password, broker.host, broker.port) as link:
            material = DeviceCrypto.create(A, one_time_prekeys=1).publish_material()
            await link.request("publish", **material)
            answer = await link.request("monitor", user=ALICE, since=0)
        kt = answer["kt"]
        assert set(kt) == {"checkpoint", "entries", "since", "consistency"}
        assert kt["checkpoint"].startswith("doormat.example/directory\n1\n")
        (item,) = kt["entries"]
        assert set(item) == {"index", "entry", "proof"} and item["proof"] == []
        assert item["entry"]["identity"] == material["identity"]
        assert set(item["entry"]) == {"device", "identity", "op", "t", "user"}
    finally:
        await service.stop()
