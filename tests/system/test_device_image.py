"""The stolen device image counts what it really opens (issue 12, point 5).

A real system (embedded broker, relay, devices); carol's phone is imaged mid-run. The
image's count is checked message by message against the plaintexts really sent:
positive controls (carol's own later messages from the sending chains in the image; a
first-contact message without a one-time prekey, reopened by redoing X3DH with the
image's identity key and signed prekey although the device's replay list refuses it;
messages sealed to carol after the theft) and negative controls (messages before the
theft that forward secrecy protects; carol's messages after a DH ratchet step the
image never saw; other people's messages).
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from doormat.cast import default_cast
from doormat.system import System
from tests.support.polling import until
from tests.system.observers import Observed, forward_secrecy, observers
from wire.ids import ATTACKER_ID

CAROL = "carol@globex.phone"
ALICE = "alice@acme.phone"
DAVE = "dave@globex.phone"
BOB = "bob@acme.phone"


async def say(system: System, device: str, to_user: str, text: str) -> tuple[str, str]:
    d = await system.send(device, to_user, text)
    assert await system.wait_delivered(d), text
    return (device, d.sent.id)


async def withhold_one_time_prekeys(system: System, device: str) -> None:
    """The relay operator deletes a device's one-time prekeys from its own store (or they
    ran out): the next first contact runs X3DH without one. (First, the device's prekey
    top-up started by its last first contact is over: it would put some back.)"""
    dev = system.devices[device]
    await until(lambda: dev._upkeep is None or dev._upkeep.done(), 10)
    with sqlite3.connect(system.state_dir / "relay.sqlite") as db:
        db.execute("DELETE FROM one_time_prekeys WHERE device = ?", (device,))


def texts(o: Observed) -> set[str]:
    return {v.decode() for v in o.opened.values()}


async def test_image_opens_what_it_really_holds_and_nothing_else(tmp_path: Path) -> None:
    async with System(default_cast(), state_dir=tmp_path) as system:
        sent: dict[str, tuple[str, str]] = {}
        sent["p1"] = await say(system, ALICE, "carol@globex", "p1 first contact, one-time prekey")
        sent["p2"] = await say(system, CAROL, "alice@acme", "p2 carol answers before the theft")
        await withhold_one_time_prekeys(system, CAROL)
        sent["p3"] = await say(system, DAVE, "carol@globex", "p3 first contact, no one-time prekey")
        # The attacker images carol's phone now (a lab breach of the device).
        assert system.lab is not None
        await system.lab.call(ATTACKER_ID, "attack.image-device", device=CAROL)
        sent["a1"] = await say(system, CAROL, "alice@acme", "a1 carol, same sending chain")
        sent["a2"] = await say(system, ALICE, "carol@globex", "a2 alice answers carol")
        sent["a3"] = await say(system, CAROL, "alice@acme", "a3 carol after alice's DH step")
        sent["a5"] = await say(system, CAROL, "dave@globex", "a5 carol's first to dave")
        sent["a6"] = await say(system, DAVE, "carol@globex", "a6 dave answers carol")
        sent["a7"] = await say(system, CAROL, "dave@globex", "a7 carol after dave's DH step")
        sent["x"] = await say(system, ALICE, "bob@acme", "x not carol's conversation")
        stolen = (await observers(system))["attacker:device-image"]
        opened = texts(stolen)
        truth = {k: system.deliveries[v].text for k, v in sent.items()}
        # Every read is a message really sent, with its exact text.
        for (sender, msg_id), plaintext in stolen.opened.items():
            assert system.deliveries[(sender, msg_id)].text == plaintext.decode()
        expected = {"p3", "a1", "a2", "a3", "a5", "a6"}
        assert opened == {truth[k] for k in expected}, sorted(opened)
        # Negative controls, named: forward secrecy (p1 used a one-time prekey, now
        # deleted; p2 was sealed with a chain key the device had already moved past),
        # healing (a7: carol's key pair after dave's DH step is not in the image), and
        # other people's messages. (a3 opens through its copy for alice's laptop: carol's
        # chain to the laptop never saw a DH step, while its copy for alice's phone is
        # sealed in carol's new chain and stays closed.)
        for k in ("p1", "p2", "a7", "x"):
            assert truth[k] not in opened
        assert stolen.readable == len(expected)
        fs = await forward_secrecy(system)
        assert fs is not None
        assert fs["messages_before"] == 3
        assert fs["readable_with_ratchet_alone"] == 1  # p3: X3DH without a one-time prekey
