"""Every exercise, solved by driving a real System - never by writing to the score store.

The lab engine watches the system's event log; the test only does what a student does
in the dashboard (send, switch, mandate, steal a key, image a phone, search the relay,
issue warrants, verify and tamper with the ledger) through the same Hub the page uses.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from doormat.cast import default_cast
from doormat.dashboard import Hub
from doormat.lab import LabEngine, ScoreStore, load_exercises
from doormat.system import System
from tests.support.polling import until


class Lab:
    def __init__(self, hub: Hub, engine: LabEngine) -> None:
        self.hub = hub
        self.engine = engine

    @property
    def system(self) -> System:
        return self.hub.system

    def solved(self) -> set[str]:
        return set(self.engine.store.solved())

    async def until(self, key: str, timeout: float = 15.0) -> None:
        await until(lambda: key in self.solved(), timeout, f"exercise {key} to be solved")

    async def send(self, device: str, to_user: str, text: str) -> None:
        d = await self.system.send(device, to_user, text)
        assert await self.system.wait_delivered(d), f"not delivered: {text}"

    async def settle_tap(self) -> None:
        """The tap's copies travel on their own; wait until it has all it will get."""
        for _ in range(200):
            mirrored = len(self.system.events.events(kind="relay.mirrored"))
            captured = len([e for e in self.system.events.events(kind="tap.captured")
                            if e["channel"] == "mirror"])
            if captured >= mirrored:
                return
            await asyncio.sleep(0.01)


@pytest.fixture
async def lab(tmp_path: Path) -> AsyncIterator[Lab]:
    def factory() -> System:
        return System(default_cast(), state_dir=tmp_path / "state")

    engine = LabEngine(load_exercises(), ScoreStore(tmp_path / "home"))
    hub = Hub(factory, lab=engine, exposure_delay=30.0)
    await hub.start()
    try:
        yield Lab(hub, engine)
    finally:
        await hub.stop()
        engine.store.close()


async def test_fresh_run_solves_nothing(lab: Lab) -> None:
    assert lab.engine.board()["total"] >= 12
    await asyncio.sleep(0.5)  # start-up events have all been seen
    assert lab.solved() == set()
    assert lab.engine.board()["solved"] == 0


async def test_an_active_relay_unchecked_does_not_solve_the_exercise(lab: Lab) -> None:
    """With the identity check off, the forgery succeeds every time: no alarm, the
    operator reads each reply, and the exercise stays open."""
    await lab.send("alice@acme.phone", "bob@acme", "Before the forgery: tango-1")
    await lab.hub.set_identity_check(False)
    for target, impersonate in (("alice@acme.phone", "bob@acme.phone"),
                                ("carol@globex.phone", "dave@globex.phone")):
        r = await lab.hub.active_relay(target, impersonate)
        assert r["forged_shown"] and r["reply_read_by_attacker"] and r["alarms"] == 0
    await asyncio.sleep(0.5)
    assert not lab.system.events.events(kind="device.identity_alarm")
    assert "active-relay-caught" not in lab.solved()


async def test_every_exercise_solved_by_driving_the_system(lab: Lab) -> None:
    keys = {e.key for e in lab.engine.active()}
    playable = keys
    assert lab.solved() == set()

    # A first message.
    await lab.send("alice@acme.phone", "bob@acme", "Board minutes: kilo-42 stay internal")
    await lab.until("first-message")

    # The relay operator searches its store for a word that was sent.
    result = await lab.hub.search("kilo-42")
    assert result["found"] == 0 and result["envelopes"] >= 2
    await lab.until("relay-sees-no-plaintext")

    # Blanket, no back door: everything mirrored, nothing read.
    await lab.hub.set_li("blanket")
    await lab.send("carol@globex.phone", "dave@globex", "Supplier list, lima-7")
    await lab.send("dave@globex.phone", "bob@acme", "Price sheet, mike-3")
    await lab.settle_tap()
    await lab.until("blanket-still-sealed")
    assert not [e for e in lab.system.events.events(kind="tap.captured") if e["readable"]]

    # Escrow: the tap reads; a stolen escrow key reads every user.
    await lab.hub.set_backdoor("escrow")
    await lab.send("carol@globex.phone", "dave@globex", "Escrowed: november-1")
    await lab.send("bob@acme.phone", "alice@acme", "Escrowed: oscar-2")
    await lab.settle_tap()
    await lab.until("escrow-opens-the-tap")
    stolen = await lab.hub.attack("escrow-key")
    assert stolen["users_read"] >= 2
    await lab.until("escrow-key-stolen")

    # Global key: the tap reads; one phone's image reads other people's messages.
    await lab.hub.set_backdoor("global-key")
    await lab.send("bob@acme.phone", "dave@globex", "Global: papa-5")
    await lab.settle_tap()
    await lab.until("global-key-opens-the-tap")
    image = await lab.hub.attack("device-image", "carol@globex.phone")
    assert image["others_read"] >= 1
    await lab.until("global-key-one-phone")

    # Ghost: the directory lists a government device for everyone; the tap reads what
    # unmodified clients encrypt to it, and alice's phone's audit of the log catches it.
    await lab.hub.set_backdoor("ghost")
    await lab.system.ghosts_installed()
    await lab.send("alice@acme.phone", "bob@acme", "Ghosted: sierra-6")
    await lab.until("ghost-reads")
    await lab.until("ghost-detected")
    alarms = lab.system.alarms()
    assert {a["device"] for a in alarms if a["user"] == "alice@acme"} == {"alice@acme.gov"}

    # Warrants, refused for three reasons (scoped, no back door from here on).
    await lab.hub.set_backdoor("none")
    await lab.hub.set_li("scoped")
    base = {"categories": ["IRI", "CC"], "approvals": ["executive", "judicial"],
            "starts_in_s": 0, "duration_s": 3600, "tamper": False}
    d = await lab.hub.submit_warrant({**base, "targets": ["user:alice@acme"], "tamper": True})
    assert d["reason"] == "bad-signature"
    await lab.until("warrant-bad-signature")
    d = await lab.hub.submit_warrant({**base, "targets": ["user:alice@acme"],
                                      "starts_in_s": -7200})
    assert d["reason"] == "expired"
    await lab.until("warrant-expired")
    d = await lab.hub.submit_warrant({**base, "targets": ["user:*"]})
    assert d["reason"] == "wildcard-target"
    await lab.until("warrant-wildcard")
    d = await lab.hub.submit_warrant({**base, "targets": ["user:alice@acme"],
                                      "starts_in_s": -3600, "duration_s": 7200})
    assert d["reason"] == "retrospective-window"
    await lab.until("warrant-retrospective")

    # A valid CC case against alice (acme archives): readable content from the archive.
    await asyncio.sleep(1.01)  # the window starts on a fresh second
    d = await lab.hub.submit_warrant({**base, "targets": ["user:alice@acme"]})
    assert d["accepted"], d
    await asyncio.sleep(0.3)  # the task reaches the relay
    await lab.send("alice@acme.phone", "bob@acme", "Under warrant: quebec-8")
    await lab.until("scoped-cc-archive", timeout=20)

    # A valid CC case against carol (globex has no archive): ciphertext only.
    d = await lab.hub.submit_warrant({**base, "targets": ["user:carol@globex"]})
    assert d["accepted"], d
    await asyncio.sleep(0.3)
    await lab.send("carol@globex.phone", "dave@globex", "Under warrant: romeo-4")
    await lab.until("scoped-metadata-only", timeout=20)

    # Oversight verifies the ledger; an insider edits an entry; verification catches it.
    verified = await lab.hub.verify_ledger()
    assert verified["ok"], verified
    await lab.until("ledger-verified")
    await lab.hub.tamper_ledger()
    caught = await lab.hub.verify_ledger()
    assert not caught["ok"]
    await lab.until("ledger-tamper-caught")
    # An insider rolls the ledger back; the court's witness cosigned the longer one.
    rolled = await lab.hub.rollback_ledger()
    assert rolled["removed"] >= 1
    caught = await lab.hub.verify_ledger()
    assert any(p.startswith("witness:") and "rolled back" in p for p in caught["problems"])
    await lab.until("ledger-rollback-caught")

    # The relay operator, turned active, forges a first message. Identity check off
    # (before issue 12; carol "from" dave): shown as dave's, the reply read - not solved.
    await lab.hub.set_identity_check(False)
    off = await lab.hub.active_relay()
    assert off["forged_shown"] and off["reply_read_by_attacker"] and off["readable"] == 1
    await asyncio.sleep(0.3)  # the engine has seen the report
    assert "active-relay-caught" not in lab.solved()
    # Check on (as built; alice "from" bob): refused, the alarm names bob's phone - caught.
    await lab.hub.set_identity_check(True)
    on = await lab.hub.active_relay()
    assert not on["forged_shown"] and on["readable"] == 0
    assert (on["alarm_user"], on["alarm_device"]) == ("bob@acme", "bob@acme.phone")
    await lab.until("active-relay-caught")

    assert playable <= lab.solved(), f"not solved: {sorted(playable - lab.solved())}"
    board = lab.engine.board()
    assert board["solved"] == len(playable)
    for row in board["exercises"]:
        if row["solved"]:
            assert row["detected_by"] and row["evidence"]["kind"]
            assert "text" not in row["evidence"]  # no plaintext kept in the score store
