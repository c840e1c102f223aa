"""Overload: a device flooding the relay does not stop the others, and nothing accepted is
dropped.

A flooder (an enrolled device's own account, speaking the protocol by hand) publishes
envelopes as fast as its connection allows, while an honest conversation between real
devices carries on through the same Mosquitto and relay (``python -m doormat relay``,
default limits). What must hold:

* every honest message reaches the application, exactly once, within a bound;
* every flood envelope the relay *accepted* (``relay.accepted``) reaches the flood's
  recipient: refusing is allowed (and reported: ``relay.rejected``, "rate limit"),
  accepting and then losing is not;
* the relay ends with nothing pending.

The honest delays are printed (with the flood's size and the relay's refusals) for the
record; the bound asserted is a liveness bound, not a performance target.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from tests.reliability.reliability_harness import relay_and_devices
from tests.support.polling import until
from wire.envelope import Envelope

pytestmark = pytest.mark.mosquitto

ALICE, BOB = "alice@acme.phone", "bob@globex.phone"
MALLORY, SINK = "mallory@acme.phone", "sink@globex.phone"
BOUND_S = 60.0  # an honest message must arrive within this, flood or not


async def _flood_and_converse(
    tmp_path: Path, make_broker: Any, flood: int, honest: int, gap: float, *relay_args: str
) -> dict[str, Any]:
    sink_ids: set[str] = set()
    devices = [ALICE, BOB, MALLORY, SINK]
    async with relay_and_devices(make_broker, tmp_path, devices, *relay_args) as rig:
        accs, broker, relay, ds = rig.accounts, rig.broker, rig.relay, rig.devices
        await ds.start(ALICE, BOB)
        warm = await ds.devices[ALICE].send("bob@globex", "warm-up")
        await until(lambda: ds.got(BOB)[(ALICE, warm.id)] == 1, 30, "the warm-up message")

        def client(name: str) -> aiomqtt.Client:
            c = aiomqtt.Client(
                broker.host, broker.port, username=name, password=accs[name].password,
                identifier=name, clean_session=False, timeout=30,
            )  # fmt: skip
            c.pending_calls_threshold = 1_000_000
            return c

        async with client(SINK) as sink, client(MALLORY) as mallory:
            await sink.subscribe(f"doormat/in/{SINK}/msg", qos=1)

            async def drain_sink() -> None:
                async for m in sink.messages:
                    e = json.loads(bytes(m.payload))  # type: ignore[arg-type]
                    sink_ids.add(e["id"])
                    ack = json.dumps({"from": e["from"], "id": e["id"]})
                    sink._client.publish(f"doormat/out/{SINK}/ack", ack, qos=1)

            sinker = asyncio.create_task(drain_sink())
            envelopes = [
                Envelope(
                    id=os.urandom(16).hex(), sender=MALLORY, recipient=SINK, ts=1,
                    header=os.urandom(41), body=os.urandom(528),
                ).encode()
                for _ in range(flood)
            ]  # fmt: skip
            window = asyncio.Semaphore(500)

            async def one(e: bytes) -> None:
                async with window:
                    await mallory.publish(f"doormat/out/{MALLORY}/msg", e, qos=1)

            t_flood = time.monotonic()
            flooding = asyncio.gather(*(one(e) for e in envelopes))
            delays: list[float] = []
            sent_ids: list[str] = []
            for k in range(honest):
                await asyncio.sleep(gap)
                t0 = time.monotonic()
                out = await ds.devices[ALICE].send("bob@globex", f"honest {k}")
                sent_ids.append(out.id)
                await until(lambda i=out.id: ds.got(BOB)[(ALICE, i)] >= 1, BOUND_S,
                            f"honest message {k} during the flood")  # fmt: skip
                delays.append(time.monotonic() - t0)
            await asyncio.wait_for(flooding, 600)
            flood_published_s = time.monotonic() - t_flood

            accepted = lambda: {  # noqa: E731
                e["id"] for e in relay.events.of("relay.accepted") if e["from"] == MALLORY
            }
            await until(lambda: accepted() <= sink_ids, 300, "every accepted flood envelope")
            await until(lambda: relay.pending() == 0, 120, "the relay's store to drain")
            sinker.cancel()
        got = ds.got(BOB)
        assert all(got[(ALICE, i)] == 1 for i in sent_ids)
        assert sum(got.values()) == honest + 1  # nothing shown twice
        refusals = [e for e in relay.events.of("relay.rejected") if e.get("owner") == MALLORY]
        assert all(e["reason"].startswith("rate limit") for e in refusals), refusals[:3]
        n_accepted = len(accepted())
        refused = sum(e.get("refused", 0) for e in refusals)
        assert n_accepted + refused <= flood
        result = {
            "flood": flood,
            "flood_published_s": round(flood_published_s, 1),
            "flood_accepted": n_accepted,
            "flood_refused_reported": refused,
            "honest_delays_s": [round(d, 3) for d in delays],
            "honest_max_s": round(max(delays), 3),
        }
        print(f"\noverload: {result}")
        return result


async def test_a_short_flood_does_not_stop_an_honest_conversation(
    tmp_path: Path, make_broker: Any
) -> None:
    await _flood_and_converse(tmp_path, make_broker, flood=1500, honest=5, gap=0.05)


@pytest.mark.slow
@pytest.mark.timeout(900)
@pytest.mark.parametrize("limits", ["default", "off"])
async def test_a_flood_of_20000_envelopes_loses_nothing_accepted(
    tmp_path: Path, make_broker: Any, limits: str
) -> None:
    args = ("--device-rate", "0") if limits == "off" else ()
    r = await _flood_and_converse(tmp_path, make_broker, 20_000, 20, 0.2, *args)
    if limits == "default":
        # Over the default burst (2,500) and rate (500/s) the relay refuses part of it.
        assert r["flood_refused_reported"] > 0
    else:
        # Without limits the fair intake alone keeps the honest conversation going, and
        # the relay accepts (and delivers) the whole flood.
        assert r["flood_accepted"] == 20_000 and r["flood_refused_reported"] == 0
