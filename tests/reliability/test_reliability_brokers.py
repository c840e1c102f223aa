"""The brokers under a burst: what a client was told had arrived (PUBACK) is delivered,
even if the client disconnects right after.

A device that sends a burst and goes offline (the app closed, the phone slept) must not
lose what the broker acknowledged. On the embedded broker (amqtt 0.12.1 as doormat
configures it) a client that pipelines QoS 1 publishes and disconnects once the last
PUBACK is in loses about half of them: acknowledged, never delivered
(docs/benchmarks.md, "found"). Mosquitto delivers every one.
"""

from __future__ import annotations

import asyncio
from typing import Any

import aiomqtt
import pytest

from doormat.broker.accounts import Account, generate_password

EMBEDDED_BURST = pytest.mark.xfail(
    reason="embedded broker: pipelined QoS 1 publishes of a client that then disconnects "
    "are acknowledged and about half are never delivered (docs/benchmarks.md, found)",
    strict=False,
)


@pytest.mark.parametrize(
    "kind",
    [
        pytest.param("embedded", marks=EMBEDDED_BURST),
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
        got: set[bytes] = set()
        try:
            async with asyncio.timeout(5):
                async for m in relay.messages:
                    got.add(bytes(m.payload))  # type: ignore[arg-type]
                    if len(got) == n:
                        break
        except TimeoutError:
            pass
        assert len(got) == n, f"{len(got)} of {n} acknowledged publishes delivered"
