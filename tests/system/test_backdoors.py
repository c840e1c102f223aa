"""The LI switch and the back doors, measured by real decryption (issue 4).

Every count is checked against ground truth: what an observer "read" must be exactly
the plaintext the sender typed, obtained with the keys that observer holds.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from doormat.cast import default_cast
from doormat.system import System
from tests.support.processes import skip_without_mosquitto
from tests.system.observers import Observed, forward_secrecy, observers
from tests.system.system_helpers import converse
from wire.ids import ATTACKER_ID

SCRIPT = [
    ("alice@acme.phone", "bob@acme", "acme internal: merger plan"),
    ("carol@globex.phone", "alice@acme", "globex to acme: price list"),
    ("bob@acme.phone", "dave@globex", "acme to globex: contract draft"),
    ("dave@globex.phone", "carol@globex", "globex internal: layoffs"),
    ("alice@acme.laptop", "carol@globex", "from alice's laptop"),
    ("carol@globex.phone", "bob@acme", "reply to bob"),
]


def assert_reads_exactly(o: Observed, truth: dict[tuple[str, str], str]) -> None:
    assert {k: v.decode() for k, v in o.opened.items()} == truth


async def run(
    tmp_path: Path, li: str, backdoor: str, broker: str = "embedded"
) -> tuple[System, dict[tuple[str, str], str], dict[str, Observed]]:
    system = System(default_cast(), broker=broker, state_dir=tmp_path, li=li, backdoor=backdoor)
    await system.start()
    truth = await converse(system, SCRIPT)
    # The tap's copies travel asynchronously; give them a moment to land.
    if system.tap is not None:
        envelopes = sum(len(d.sent.devices) for d in system.deliveries.values())
        for _ in range(200):
            if system.tap.count("mirror") >= envelopes:
                break
            await asyncio.sleep(0.01)
    return system, truth, await observers(system, "carol@globex.phone")


@pytest.mark.parametrize(
    "broker", ["embedded", pytest.param("mosquitto", marks=pytest.mark.mosquitto)]
)
async def test_blanket_without_back_door_captures_all_and_reads_nothing(
    tmp_path: Path, broker: str
) -> None:
    if broker == "mosquitto":
        skip_without_mosquitto()
    system, truth, obs = await run(tmp_path, "blanket", "none", broker)
    try:
        tap = obs["blanket-tap"]
        assert tap.captured == len(truth) == system.messages_sent
        assert tap.readable == 0
        assert tap.metadata_records >= len(truth)
        assert tap.keys == []
        assert obs["relay"].readable == 0
        assert "attacker:escrow-key" not in obs
    finally:
        await system.stop()


async def test_li_off_sends_nothing_to_the_tap(tmp_path: Path) -> None:
    system, _truth, obs = await run(tmp_path, "off", "none")
    try:
        # The tap is connected but the switch is off: it receives nothing at all.
        assert system.tap is not None and system.tap.count() == 0
        assert "blanket-tap" not in obs
        assert not system.events.events(kind="relay.mirrored")
    finally:
        await system.stop()


async def test_escrow_opens_everything_for_the_tap_and_for_a_thief(tmp_path: Path) -> None:
    system, truth, obs = await run(tmp_path, "blanket", "escrow")
    try:
        assert obs["blanket-tap"].readable == system.messages_sent
        assert_reads_exactly(obs["blanket-tap"], truth)
        thief = obs["attacker:escrow-key"]
        assert thief.readable == system.messages_sent
        assert_reads_exactly(thief, truth)
        # ... across both enterprises, senders and recipients alike.
        enterprises = {dev.split("@")[1].split(".")[0] for dev, _ in thief.opened}
        assert enterprises == {"acme", "globex"}
        # The relay still reads nothing: the back door is in the clients, not the relay.
        assert obs["relay"].readable == 0
        # Without the escrow key the same bytes stay closed: a device image holds none.
        assert obs["attacker:device-image"].readable < system.messages_sent
    finally:
        await system.stop()


async def test_global_key_one_device_image_reads_everyone(tmp_path: Path) -> None:
    system, truth, obs = await run(tmp_path, "blanket", "global-key")
    try:
        image = obs["attacker:device-image"]
        assert image.readable == system.messages_sent
        assert_reads_exactly(image, truth)
        assert obs["blanket-tap"].readable == system.messages_sent
    finally:
        await system.stop()


async def test_forward_secrecy_lost_only_with_the_back_door(tmp_path: Path) -> None:
    """A device image taken mid-run: the ratchet alone opens none of the earlier messages;
    with the global-key build the same image opens them all."""
    for backdoor, expect_whole in (("none", 0), ("global-key", 3)):
        system = System(default_cast(), state_dir=tmp_path / backdoor, backdoor=backdoor)
        await system.start()
        try:
            for device, to_user, text in SCRIPT[:3]:
                d = await system.send(device, to_user, text)
                assert await system.wait_delivered(d)
            assert system.lab is not None
            await system.lab.call(ATTACKER_ID, "attack.image-device", device="carol@globex.phone")
            for device, to_user, text in SCRIPT[3:]:
                d = await system.send(device, to_user, text)
                assert await system.wait_delivered(d)
            fs = await forward_secrecy(system)
            assert fs is not None
            assert fs["messages_before"] == 3
            assert fs["readable_with_ratchet_alone"] == 0
            assert fs["readable_with_whole_image"] == expect_whole
        finally:
            await system.stop()


async def test_switching_at_runtime(tmp_path: Path) -> None:
    """Flip blanket on and impose escrow mid-run: only messages after both changes open."""
    system = System(default_cast(), state_dir=tmp_path)
    await system.start()
    try:
        first = await converse(system, SCRIPT)
        await system.set_li("blanket")
        await system.set_backdoor("escrow")
        second = await converse(system, SCRIPT)
        assert system.tap is not None
        envelopes = sum(len(d.sent.devices) for d in system.deliveries.values())
        for _ in range(300):
            if system.tap.count("mirror") >= envelopes // 2:
                break
            await asyncio.sleep(0.01)
        obs = await observers(system, "carol@globex.phone")
        assert obs["blanket-tap"].captured == len(second)
        assert_reads_exactly(obs["blanket-tap"], second)
        # The thief with the escrow key reads exactly the escrowed half of the archive.
        assert_reads_exactly(obs["attacker:escrow-key"], second)
        assert obs["relay"].captured == len(first) + len(second)
    finally:
        await system.stop()
