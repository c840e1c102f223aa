"""The ghost back door and key transparency, end to end (issue 4)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from doormat.cast import default_cast
from doormat.system import System
from tests.system.observers import observers
from tests.system.system_helpers import converse

SCRIPT = [
    ("alice@acme.phone", "bob@acme", "one"),
    ("carol@globex.phone", "dave@globex", "two"),
    ("dave@globex.phone", "alice@acme", "three"),
    ("bob@acme.phone", "carol@globex", "four"),
]


async def settle(system: System) -> None:
    assert system.tap is not None
    for _ in range(200):
        if system.tap.count("ghost"):
            break
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.2)


async def test_ghost_reads_everything_after_it_was_added_and_is_detected(
    tmp_path: Path,
) -> None:
    async with System(default_cast(), state_dir=tmp_path, li="blanket") as system:
        before = await converse(system, SCRIPT)  # no ghost yet
        assert await system.monitor() == []
        await system.set_backdoor("ghost")
        await system.ghosts_installed()
        after = await converse(system, SCRIPT)
        await settle(system)
        obs = await observers(system, "bob@acme.phone")
        tap = obs["blanket-tap"]
        # Real decryption by the ghosts' ratchets: exactly the messages after the ghost.
        assert {k: v.decode() for k, v in tap.opened.items()} == after
        assert not set(before) & set(tap.opened)
        assert tap.captured == len(before) + len(after)
        # Clients were not changed, yet every user's messages went to their ghost too.
        ghost_envelopes = system.tap.count("ghost")  # type: ignore[union-attr]
        assert ghost_envelopes >= len(after)
        # Key transparency: every user whose devices audit the log sees their ghost.
        await system.monitor()
        alarmed = {(a["user"], a["device"]) for a in system.alarms()}
        assert alarmed == {(u.user, f"{u.user}.gov") for u in system.cast.users}


async def test_no_ghost_no_alarm(tmp_path: Path) -> None:
    async with System(
        default_cast(), state_dir=tmp_path, li="blanket", backdoor="escrow"
    ) as system:
        await converse(system, SCRIPT)
        await system.monitor()
        assert await system.gossip() == []
        assert system.alarms() == []


async def test_split_view_is_caught_when_devices_compare_checkpoints(tmp_path: Path) -> None:
    async with System(default_cast(), state_dir=tmp_path) as system:
        assert system.relay is not None
        # Hide the ghosts from alice's devices only, then add them.
        system.relay.relay.set_split_view({"alice@acme"})
        await system.set_backdoor("ghost")
        await system.ghosts_installed()
        for dev in system.devices.values():
            dev.forget_device_lists()
        await converse(system, SCRIPT)
        await system.monitor()
        alarms = await system.gossip()
        assert any(a["kind"] == "split-view" for a in alarms)
        # alice's own devices saw no ghost in their (forked) view of the log...
        assert not any(
            a["user"] == "alice@acme" and a["kind"] == "unenrolled-device" for a in system.alarms()
        )
        # ...so it is comparing checkpoints with the others' that exposes the fork.
        split = [a for a in system.alarms() if a["kind"] == "split-view"]
        assert split and all(a["raised_by"] in system.devices for a in split)
