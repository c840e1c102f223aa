"""A Mosquitto restart in the middle of a conversation: both devices keep receiving, and
every message reaches the other's application exactly once.

Two single-device users (bob in acme, which runs a disclosed archive, so bob's device
also publishes a journal record from inside its envelope handler; carol in globex) send
to each other continuously while the broker is restarted twice. Before the link (now
infra/link.py over infra/transport.py) watched the connection itself, a device whose
reader was inside the envelope handler when the connection dropped never received again
(docs/benchmarks.md, "found" 2).
"""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path

import pytest

from doormat.cast import default_cast
from doormat.system import System
from tests.support.polling import until
from tests.support.processes import skip_without_mosquitto

pytestmark = pytest.mark.mosquitto

BOB = "bob@acme.phone"
CAROL = "carol@globex.phone"
PER_SIDE = 150
RESTART_AT = (40, 100)  # messages received by each side before each restart


def _received(system: System, device: str) -> Counter[tuple[str, str]]:
    return Counter(
        (e["from"], e["id"])
        for e in system.events.events(kind="device.received")
        if e["actor"] == device
    )


@pytest.mark.timeout(180)
async def test_broker_restarted_mid_conversation_every_message_once(tmp_path: Path) -> None:
    skip_without_mosquitto()
    async with System(default_cast(), broker="mosquitto", state_dir=tmp_path / "state") as s:
        sent: dict[str, list[str]] = {BOB: [], CAROL: []}

        async def talk(device: str, to_user: str) -> None:
            for k in range(PER_SIDE):
                sent[device].append((await s.devices[device].send(to_user, f"{device} {k}")).id)

        talking = [
            asyncio.create_task(talk(BOB, "carol@globex")),
            asyncio.create_task(talk(CAROL, "bob@acme")),
        ]
        for at in RESTART_AT:
            await until(
                lambda at=at: min(sum(_received(s, d).values()) for d in (BOB, CAROL)) >= at,
                60,
                f"{at} received on each side",
            )
            await s.broker.restart()
        await asyncio.wait_for(asyncio.gather(*talking), 60)

        def complete() -> bool:
            return set(_received(s, CAROL)) >= {(BOB, i) for i in sent[BOB]} and set(
                _received(s, BOB)
            ) >= {(CAROL, i) for i in sent[CAROL]}

        try:
            await until(complete, 60, "every message at the other side")
        except AssertionError:
            raise AssertionError(
                f"carol got {len(_received(s, CAROL))}/{len(sent[BOB])}, "
                f"bob got {len(_received(s, BOB))}/{len(sent[CAROL])}"
            ) from None
        await asyncio.sleep(0.5)  # a late redelivery, if any, would be shown now
        for device, peer in ((CAROL, BOB), (BOB, CAROL)):
            got = _received(s, device)
            assert set(got) == {(peer, i) for i in sent[peer]}
            assert all(n == 1 for n in got.values()), [k for k, n in got.items() if n > 1]
            history = Counter(
                (h.device, h.id) for h in s.devices[device].history() if h.direction == "in"
            )
            assert set(history) == set(got) and all(n == 1 for n in history.values())
        assert not s.events.events(kind="device.unreadable")
