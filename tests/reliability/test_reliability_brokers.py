"""The brokers under a burst: what a client was told had arrived (PUBACK) is delivered,
even if the client disconnects right after.

A device that sends a burst and goes offline (the app closed, the phone slept) must not
lose what the broker acknowledged. Stock amqtt 0.12.1 lost about half of them when the
client pipelined QoS 1 publishes and disconnected once the last PUBACK was in
(docs/benchmarks.md, "found" 4); the embedded broker now broadcasts what is still
queued when a connection ends (doormat.broker.embedded). Mosquitto delivers every one.
"""

from __future__ import annotations

import asyncio
from typing import Any

import aiomqtt
import pytest

from doormat.broker.accounts import Account, generate_password
from tests.support.mqtt import collect


@pytest.mark.parametrize(
    "kind",
    [
        "embedded",
        pytest.param("mosquitto", marks=pytest.mark.mosquitto),
    ],
)
async def test_pipelined_qos1_publishes_all_arrive(make_broker: Any, kind: str) -> None:
    alice = "alice@acme.phone"
    accs = {
        n: Account(n, generate_password(), r) for n, r in (("relay", "relay"), (alice, "device"))
    }
    broker = await make_broker(kind, accs.values())

    def client(name: str) -> aiomqtt.Client:
        return aiomqtt.Client(
            broker.host, broker.port, username=name, password=accs[name].password,
            identifier=name, timeout=10, clean_session=False,  # as the relay and devices do
        )  # fmt: skip

    n, window = 200, 10
    async with client("relay") as relay:
        await relay.subscribe("doormat/out/+/+", qos=1)
        async with client(alice) as a:
            sem = asyncio.Semaphore(window)

            async def one(i: int) -> None:
                async with sem:
                    payload = f"m{i} ".encode() + b"x" * 500
                    await a.publish(f"doormat/out/{alice}/msg", payload, qos=1)

            await asyncio.gather(*(one(i) for i in range(n)))  # every one acknowledged
        # The sender is gone (a device that sent and went offline): what it was told had
        # arrived must still reach the subscriber.
        got = await collect(relay, n, 5)
        assert len(got) == n, f"{len(got)} of {n} acknowledged publishes delivered"
