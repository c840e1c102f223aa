"""The tap measures its own store: its row stays after the switch goes off (issue 11)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from doormat.cast import default_cast
from doormat.system import System
from tests.system.observers import observers


async def test_the_taps_row_stays_when_the_switch_is_off(tmp_path: Path) -> None:
    async with System(default_cast(), state_dir=tmp_path, li="blanket") as system:
        mirrored = set()
        for device, to, text in (("alice@acme.phone", "bob@acme", "one"),
                                 ("carol@globex.phone", "dave@globex", "two")):
            d = await system.send(device, to, text)
            assert await system.wait_delivered(d)
            mirrored |= {(device, d.sent.id, r) for r in d.sent.devices}
        async with asyncio.timeout(10):  # every envelope of both reached the tap
            while not mirrored <= {(e["from"], e["id"], e["to"])
                                   for e in system.events.events(kind="tap.captured")}:
                await asyncio.sleep(0.02)
        await system.set_li("off")
        d = await system.send("bob@acme.phone", "alice@acme", "three, not mirrored")
        assert await system.wait_delivered(d)
        obs = await observers(system)
        tap = obs["blanket-tap"]
        assert (tap.captured, tap.readable) == (2, 0)  # no back door: sealed
        assert obs["relay"].captured == 3
