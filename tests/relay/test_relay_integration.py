"""The relay on a real broker (amqtt and Mosquitto), with fake devices.

The fake devices are plain MQTT clients exchanging hand-made envelopes whose
ciphertext is random bytes: what matters here is routing, storage, acknowledgement and
refusal, not cryptography.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import pytest

from tests.relay.relay_harness import (
    ALICE,
    ALICE2,
    BOB,
    MALLORY,
    FakeDevice,
    RelayEnv,
    new_service,
)
from tests.support.polling import until
from wire.envelope import Envelope

Make = Callable[..., Envelope]


async def test_delivery_and_ack_deletes(relay_env: RelayEnv, make_envelope: Make) -> None:
    alice, bob = relay_env.devices[ALICE], relay_env.devices[BOB]
    sent = [make_envelope(ALICE, BOB) for _ in range(20)]
    for env in sent:
        await alice.send(env)
    await bob.wait(lambda: len(bob.envelopes) >= 20)
    assert bob.envelopes == [e.encode() for e in sent]  # byte for byte, in order
    # bob's acks reach the relay and empty its store
    await until(lambda: relay_env.service.store.pending_count() == 0)
    accepted = relay_env.events.events("relay.accepted")
    assert [e["id"] for e in accepted] == [e.id for e in sent]
    assert len(relay_env.events.events("relay.acked")) == 20
    # what the operator holds: every envelope's bytes, and nothing it could read;
    # still there after the relay stopped
    assert list(relay_env.service.captured()) == [e.encode() for e in sent]
    await relay_env.service.stop()
    assert list(relay_env.service.captured()) == [e.encode() for e in sent]


async def test_offline_device_gets_envelopes_via_persistent_session(
    relay_env: RelayEnv, make_envelope: Make
) -> None:
    alice, bob = relay_env.devices[ALICE], relay_env.devices[BOB]
    await bob.disconnect()  # its session (clean_session=False) stays at the broker
    sent = [make_envelope(ALICE, BOB) for _ in range(10)]
    for env in sent:
        await alice.send(env)
    await until(lambda: len(relay_env.events.events("relay.accepted")) == 10)
    assert relay_env.service.store.pending_count(BOB) == 10
    await bob.connect(subscribe=False)  # the broker resumes the session and its queue
    await bob.wait(lambda: len(bob.envelopes) >= 10)
    assert set(bob.ids()) == {e.id for e in sent}
    await until(lambda: relay_env.service.store.pending_count() == 0)


async def test_offline_device_gets_envelopes_via_sync(
    relay_env: RelayEnv, make_envelope: Make
) -> None:
    """A device whose broker session is gone (clean start, new install, broker lost
    its queue) still gets everything: the relay holds it until acknowledged."""
    alice, bob = relay_env.devices[ALICE], relay_env.devices[BOB]
    await bob.disconnect()
    sent = [make_envelope(ALICE, BOB) for _ in range(10)]
    for env in sent:
        await alice.send(env)
    await until(lambda: relay_env.service.store.pending_count(BOB) == 10)
    fresh = FakeDevice(relay_env.mqtt, BOB, clean_session=True)  # drops the old session
    relay_env.devices[BOB] = fresh
    await fresh.connect()
    assert fresh.envelopes == []
    answer = await fresh.request("sync")
    assert answer == {"req": answer["req"], "ok": True, "pending": 10}
    await fresh.wait(lambda: len(fresh.envelopes) >= 10)
    # The sync re-sends all ten, in order. (A publish the relay had in flight when the
    # session was replaced may also land: at least once, never less.)
    assert fresh.ids()[-10:] == [e.id for e in sent]
    await until(lambda: relay_env.service.store.pending_count() == 0)


async def test_relay_down_then_restarted(relay_env: RelayEnv, make_envelope: Make) -> None:
    """Envelopes sent while the relay is away wait in its broker session; on restart
    it also republishes what is still pending from before."""
    alice, bob = relay_env.devices[ALICE], relay_env.devices[BOB]
    bob.auto_ack = False
    before = make_envelope(ALICE, BOB)
    await alice.send(before)
    await bob.wait(lambda: len(bob.envelopes) == 1)
    await relay_env.service.stop()
    during = [make_envelope(ALICE, BOB) for _ in range(5)]
    for env in during:
        await alice.send(env)  # the broker acknowledges and queues for the relay
    bob.clear()
    relay_env.service = new_service(relay_env.mqtt, relay_env.db, relay_env.events)
    await relay_env.service.start()
    await bob.wait(lambda: {before.id, *(e.id for e in during)} <= set(bob.ids()))
    assert relay_env.service.store.pending_count(BOB) == 6  # nothing acked yet


async def test_directory_over_the_broker(relay_env: RelayEnv) -> None:
    alice, bob = relay_env.devices[ALICE], relay_env.devices[BOB]
    spk = {"id": 1, "key": "a2V5", "sig": "c2ln"}
    answer = await bob.request(
        "publish",
        identity="Ym9i",
        signed_prekey=spk,
        one_time_prekeys=[{"id": i, "key": "b3Rr"} for i in range(2)],
    )
    assert answer["one_time_prekeys"] == 2
    assert (await alice.request("devices", user="bob@globex"))["devices"] == [BOB]
    got = [(await alice.request("bundles", user="bob@globex"))["bundles"][0] for _ in range(3)]
    assert [b["one_time_prekey"] and b["one_time_prekey"]["id"] for b in got] == [0, 1, None]
    refused = await bob.request("publish", identity="b3RoZXI=", signed_prekey=spk)
    assert refused["ok"] is False and "different key" in refused["error"]


async def test_bad_input_rejected_while_honest_stream_flows(
    relay_env: RelayEnv, make_envelope: Make
) -> None:
    alice, bob, mallory = (relay_env.devices[d] for d in (ALICE, BOB, MALLORY))
    honest = [make_envelope(ALICE, BOB) for _ in range(150)]

    async def stream() -> None:
        for env in honest:
            await alice.send(env)

    replayed = make_envelope(MALLORY, BOB)
    attacks: list[tuple[str, bytes | str, str]] = [
        ("msg", b"\x00garbage", "malformed envelope"),
        ("msg", b"{" * 70_000, "envelope too large"),
        ("msg", make_envelope(ALICE, BOB).encode(), "sender mismatch"),  # as alice
        ("msg", make_envelope(MALLORY, "nobody@acme.phone").encode(), "unknown recipient"),
        ("msg", json.dumps({**replayed.to_json(), "v": 2}), "malformed envelope"),
        ("msg", replayed.encode(), ""),  # accepted once ...
        ("msg", replayed.encode(), "duplicate"),  # ... and replayed
        ("ack", b"{}", "malformed ack"),
        ("dir", b"[]", "malformed dir"),
        (
            "dir",
            json.dumps(
                {"req": "x", "op": "enrol", "user": "mallory@acme", "device": "mallory@acme.tablet"}
            ),
            "enrol is for enterprise",
        ),
    ]

    async def attack() -> None:
        for kind, payload, _ in attacks:
            await mallory.publish(kind, payload)
            await asyncio.sleep(0)

    await asyncio.gather(stream(), attack())
    await bob.wait(lambda: len(set(bob.ids())) >= 151, timeout=20)
    # every honest envelope arrived, once, in order
    got = [i for i in bob.ids() if i != replayed.id]
    assert got == [e.id for e in honest]
    assert bob.ids().count(replayed.id) == 1
    # each attack has its logged reason; mallory was told for each refusal
    await until(lambda: len(relay_env.events.events("relay.rejected")) >= 8)
    reasons = [e["reason"] for e in relay_env.events.events("relay.rejected")]
    for _, _, expected in attacks:
        if expected and expected != "duplicate":
            assert any(r.startswith(expected) for r in reasons), (expected, reasons)
    assert all(e["owner"] == MALLORY for e in relay_env.events.events("relay.rejected"))
    dup = relay_env.events.events("relay.duplicate")
    assert [(e["from"], e["id"]) for e in dup] == [(MALLORY, replayed.id)]
    await mallory.wait(lambda: len(mallory.errors) + len(mallory.answers) >= 8)
    await until(lambda: relay_env.service.store.pending_count() == 0)


async def test_fan_out_same_id_to_several_devices(relay_env: RelayEnv, make_envelope: Make) -> None:
    bob, a1, a2 = (relay_env.devices[d] for d in (BOB, ALICE, ALICE2))
    first = make_envelope(BOB, ALICE)
    second = make_envelope(BOB, ALICE2, msg_id=first.id)
    await bob.send(first)
    await bob.send(second)
    await a1.wait(lambda: a1.ids() == [first.id])
    await a2.wait(lambda: a2.ids() == [first.id])
    await until(lambda: relay_env.service.store.pending_count() == 0)


@pytest.mark.parametrize(
    "mqtt_env", [pytest.param("mosquitto", marks=pytest.mark.mosquitto)], indirect=True
)  # only Mosquitto can be restarted in place
async def test_relay_reconnects_when_the_broker_restarts(
    relay_env: RelayEnv, make_envelope: Make
) -> None:
    broker: Any = relay_env.mqtt.broker
    alice, bob = relay_env.devices[ALICE], relay_env.devices[BOB]
    for d in (alice, bob):
        await d.disconnect()
    await broker.restart()
    await until(lambda: len(relay_env.events.events("relay.connected")) >= 2, timeout=15)
    assert relay_env.events.events("relay.disconnected")
    for d in (alice, bob):
        await d.connect()
    env = make_envelope(ALICE, BOB)
    await alice.send(env)
    await bob.wait(lambda: env.id in bob.ids())
