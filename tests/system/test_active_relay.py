"""An active relay forges a first message "from" bob to alice (issue 12, point 1).

Real brokers, a real relay and real devices. The attacker has what the relay operator
has: alice's public bundle from its own store, and its broker account, which may
publish into any inbox. On main, alice's phone took the forged identity for bob's,
replaced its session, showed the forged text as bob's, and sealed its reply in the
attacker's session: readable by the operator, unreadable on bob's real phone, and no
alarm. With the check, the forged message is refused before anything is installed,
an alarm names bob and his device, and the reply is sealed for bob's real phone only.

Then the attacks on the fix: a first contact forged before alice ever talked to bob; a
relay that also writes its forged key into its own log (accepted by an unverified
peer, caught by bob's own monitoring; refused by a peer who verified bob's safety
number); a device that lies about its own identity; replays and reordering of the
forged envelope; a device stopped while a message waits for its check.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from doormat.active_relay import (
    ActiveRelay,
    inject,
    public_bundle,
    run_active_relay,
    write_log_entry,
)
from doormat.cast import default_cast
from doormat.system import System
from infra.transport import Transport
from interceptor.measure import measure_envelopes
from tests.support.polling import until
from tests.support.processes import skip_without_mosquitto
from tests.system.system_helpers import converse
from wire import envelope as wire_envelope
from wire import topics
from wire.b64 import b64encode
from wire.envelope import Envelope
from wire.events import Event

ALICE, BOB, CAROL, DAVE = (
    "alice@acme.phone",
    "bob@acme.phone",
    "carol@globex.phone",
    "dave@globex.phone",
)


def _brokers() -> list[object]:
    return ["embedded", pytest.param("mosquitto", marks=pytest.mark.mosquitto)]


@pytest.fixture(params=_brokers())
async def system(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[System]:
    if request.param == "mosquitto":
        skip_without_mosquitto()
    async with System(default_cast(), broker=request.param, state_dir=tmp_path) as s:
        yield s


def events_about(system: System, actor: str, msg_id: str) -> list[Event]:
    return [e for e in system.events.events(actor=actor) if e.get("id") == msg_id]


def identity_alarms(system: System, actor: str) -> list[Event]:
    return system.events.events(kind="device.identity_alarm", actor=actor)


async def handled(system: System, actor: str, msg_id: str) -> list[Event]:
    kinds = ("device.received", "device.unreadable", "device.identity_alarm")
    await until(
        lambda: any(e["kind"] in kinds for e in events_about(system, actor, msg_id)),
        10.0,
        f"{actor} to handle {msg_id}",
    )
    return events_about(system, actor, msg_id)


async def test_forged_prekey_message_is_refused_and_the_reply_stays_private(
    system: System,
) -> None:
    await converse(system, [(BOB, "alice@acme", "hi alice"), (ALICE, "bob@acme", "hi bob")])
    alice = system.devices[ALICE]
    bob_identity = alice.crypto.peer_identity(BOB)
    state_before = alice.crypto.to_bytes()
    attacker = ActiveRelay(BOB)
    raw = attacker.forge(ALICE, public_bundle(system, ALICE), b"bob here, new phone: figures?")
    forged = attacker.forged[-1][1]
    await inject(system, ALICE, raw)
    seen = await handled(system, ALICE, forged)
    assert [e["kind"] for e in seen] == ["device.identity_held", "device.identity_alarm"]
    alarm = seen[-1]
    assert (alarm["user"], alarm["device"]) == ("bob@acme", BOB)
    assert alarm["alarm_kind"] == "identity-not-logged"
    assert alarm["presented"] == attacker.identity.fingerprint()[:16]
    # Nothing installed: the same session with bob's real identity, the same state.
    assert alice.crypto.peer_identity(BOB) == bob_identity
    assert alice.crypto.to_bytes() == state_before
    assert not [h for h in alice.history() if h.id == forged]
    # Alice's reply goes to bob's real phone, and the operator reads none of it.
    reply = await system.send(ALICE, "bob@acme", "the figures: 4.2M")
    assert await system.wait_delivered(reply)
    assert system.relay is not None
    # The operator measures itself, with the keys it holds.
    row = measure_envelopes(attacker.name, list(system.relay.captured()), readers=[attacker]).row
    assert len(row.readable) == 0 and len(row.captured) >= 3


async def test_the_lesson_before_and_after_the_check(tmp_path: Path) -> None:
    """The measurement the lab shows: with the check off (the old behaviour) the active
    relay reads the reply and the real device cannot; with it on, 0 and an alarm."""
    async with System(default_cast(), state_dir=tmp_path) as system:
        await converse(system, [(BOB, "alice@acme", "hi"), (DAVE, "carol@globex", "hi")])
        system.devices[CAROL].check_identities = False
        before = await run_active_relay(system, target=CAROL, impersonate=DAVE)
        assert before.to_json()["identity_check"] is False
        assert before.forged_shown and before.reply_read_by_attacker
        assert not before.reply_read_by_peer
        assert before.alarms == []
        assert before.observer is not None and before.observer.readable == 1
        after = await run_active_relay(system, target=ALICE, impersonate=BOB)
        assert not after.forged_shown and not after.reply_read_by_attacker
        assert after.reply_read_by_peer
        assert [(a["user"], a["device"]) for a in after.alarms] == [("bob@acme", BOB)]
        assert after.observer is not None and after.observer.readable == 0


async def test_forged_first_contact_is_refused(tmp_path: Path) -> None:
    """Alice never talked to bob: a first identity is checked against the log too."""
    async with System(default_cast(), state_dir=tmp_path) as system:
        result = await run_active_relay(system)
        assert not result.forged_shown and not result.reply_read_by_attacker
        assert result.reply_read_by_peer
        assert len(result.alarms) == 1


async def test_relay_that_logs_its_forgery(tmp_path: Path) -> None:
    """The operator also appends the forged key to its own log. Then the log proves the
    lie: alice, who never verified bob's safety number, accepts it (with a notice that
    bob's key changed) and the relay reads her reply - but the lie is now signed and
    append-only, and bob's own phone raises a key-mismatch alarm. Carol, who verified
    dave's safety number, refuses the same attack."""
    async with System(default_cast(), state_dir=tmp_path) as system:
        await converse(system, [(BOB, "alice@acme", "hi"), (DAVE, "carol@globex", "hi")])
        carol = system.devices[CAROL]
        number = carol.safety_number(DAVE)
        assert number is not None and len(number) == 60
        with pytest.raises(ValueError):
            carol.mark_verified(DAVE, "0" * 60)
        carol.mark_verified(DAVE, " ".join(number[i : i + 5] for i in range(0, 60, 5)))

        unverified = await run_active_relay(system, log_forgery=True)
        assert unverified.forged_shown and unverified.reply_read_by_attacker
        changed = system.events.events(kind="device.identity_accepted", actor=ALICE)
        assert [(e["changed"], e["how"]) for e in changed if e["device"] == BOB][-1] == (
            True,
            "key-transparency",
        )
        await system.monitor()
        mismatch = [a for a in system.alarms() if a["kind"] == "key-mismatch"]
        assert [(a["device"], a["raised_by"]) for a in mismatch] == [(BOB, BOB)]

        verified = await run_active_relay(system, target=CAROL, impersonate=DAVE,
                                          log_forgery=True)  # fmt: skip
        assert not verified.forged_shown and not verified.reply_read_by_attacker
        assert [a["alarm_kind"] for a in verified.alarms] == ["verified-identity-changed"]


async def test_a_device_that_lies_about_its_own_identity(tmp_path: Path) -> None:
    """Dave's own account sends carol a prekey message under a key that is not dave's
    logged one (the relay binds the sender to dave's topic, so only dave's device can
    be named): refused, and the alarm names dave."""
    async with System(default_cast(), state_dir=tmp_path) as system:
        liar = ActiveRelay(DAVE)
        raw = liar.forge(CAROL, public_bundle(system, CAROL), b"dave, trust me")
        transport = Transport(
            system.broker.host,
            system.broker.port,
            username=DAVE,
            password=system.credentials[DAVE].password,
            identifier=f"{DAVE}-liar",
            clean_session=True,
        )
        await system.stop_device(DAVE)  # the liar uses dave's own account
        await transport.start()
        try:
            await transport.publish(topics.outbound(DAVE, topics.MSG), raw)
        finally:
            await transport.stop()
        seen = await handled(system, CAROL, liar.forged[-1][1])
        assert seen[-1]["kind"] == "device.identity_alarm"
        assert (seen[-1]["user"], seen[-1]["device"]) == ("dave@globex", DAVE)


async def test_replayed_and_reordered_forgeries_are_refused(tmp_path: Path) -> None:
    async with System(default_cast(), state_dir=tmp_path) as system:
        await converse(system, [(BOB, "alice@acme", "hi")])
        attacker = ActiveRelay(BOB)
        bundle = public_bundle(system, ALICE)
        first = attacker.forge(ALICE, bundle, b"one")
        second = attacker.forge(ALICE, bundle, b"two")  # same prekey message, next key
        await inject(system, ALICE, second)  # out of order
        await inject(system, ALICE, first)
        for _, msg_id in attacker.forged:
            await handled(system, ALICE, msg_id)
        assert len(identity_alarms(system, ALICE)) == 2
        # The same envelope again: already processed, dropped without a new alarm.
        await inject(system, ALICE, first)
        # The same prekey message and ciphertext under a fresh id: refused again.
        env = wire_envelope.parse(first)
        again = Envelope(
            id="f" * 32, sender=env.sender, recipient=env.recipient, ts=env.ts,
            header=env.header, body=env.body, prekey=env.prekey,
        ).encode()  # fmt: skip
        await inject(system, ALICE, again)
        await handled(system, ALICE, "f" * 32)
        await asyncio.sleep(0.3)
        assert len(identity_alarms(system, ALICE)) == 3
        received = system.events.events(kind="device.received", actor=ALICE)
        assert all(e["id"] not in {m for _, m in attacker.forged} | {"f" * 32} for e in received)


async def test_a_held_message_survives_a_stop_and_is_delivered_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Bob's first message to carol waits for its check; carol's device stops before the
    directory answers; after a restart it is checked, opened and shown exactly once."""
    async with System(default_cast(), state_dir=tmp_path) as system:
        carol = system.devices[CAROL]
        blocked = asyncio.Event()

        async def stuck(*args: Any, **kwargs: Any) -> Any:
            blocked.set()
            await asyncio.Event().wait()

        monkeypatch.setattr(carol, "_lookup", stuck)
        sent = await system.send(BOB, "carol@globex", "wait for me")
        await asyncio.wait_for(blocked.wait(), 10)
        assert [e["kind"] for e in events_about(system, CAROL, sent.sent.id)] == [
            "device.identity_held"
        ]
        await system.stop_device(CAROL)
        await system.start_device(CAROL)
        assert await system.wait_delivered(sent)
        await asyncio.sleep(0.3)
        got = [e for e in system.events.events(kind="device.received", actor=CAROL)
               if e["id"] == sent.sent.id]  # fmt: skip
        assert len(got) == 1 and got[0]["text"] == "wait for me"
        accepted = system.events.events(kind="device.identity_accepted", actor=CAROL)
        assert [(e["device"], e["how"]) for e in accepted] == [(BOB, "key-transparency")]


async def test_a_genuine_first_contact_is_checked_and_delivered_in_order(tmp_path: Path) -> None:
    async with System(default_cast(), state_dir=tmp_path) as system:
        truth = await converse(
            system,
            [(DAVE, "alice@acme", "one"), (DAVE, "alice@acme", "two"), (ALICE, "dave@globex", "3")],
        )
        texts = [e["text"] for e in system.events.events(kind="device.received", actor=ALICE)]
        assert texts == ["one", "two"]
        assert identity_alarms(system, ALICE) == [] and len(truth) == 3


async def test_the_demo_reports_the_active_relay_and_the_first_contacts(tmp_path: Path) -> None:
    from doormat.demo import DemoOptions, run_demo

    opts = DemoOptions(messages=4, quiet=True, state=tmp_path / "state", active_relay=True)
    report = await run_demo(opts)
    active = report["active_relay"]
    assert active["check_off"]["forged_shown"] and active["check_off"]["observer"]["readable"] == 1
    assert not active["check_on"]["forged_shown"]
    assert active["check_on"]["observer"]["readable"] == 0
    assert [a["device"] for a in active["check_on"]["alarms"]] == ["bob@acme.phone"]
    assert set(report["first_contact"]) == {
        "device", "messages", "without_one_time_prekey", "opened_by_image",
        "opened_if_no_key_were_deleted", "opened_after_rotation",
    }  # fmt: skip
    # The report's existing fields are still there.
    assert {"observers", "forward_secrecy", "alarms", "ledger"} <= set(report)


async def test_a_forgery_from_a_device_nobody_enrolled_is_refused(tmp_path: Path) -> None:
    async with System(default_cast(), state_dir=tmp_path) as system:
        result = await run_active_relay(system, impersonate="mallory@acme.phone")
        assert not result.forged_shown
        assert [(a["user"], a["device"]) for a in result.alarms] == [
            ("mallory@acme", "mallory@acme.phone")
        ]
        assert "does not prove the device" in result.alarms[0]["reason"]


async def test_a_forgery_held_beside_the_genuine_first_contact(tmp_path: Path) -> None:
    """The forged message, then bob's real first message right after it, both new to
    alice and both checked against the same log: bob's is opened, the forgery refused."""
    async with System(default_cast(), state_dir=tmp_path) as system:
        attacker = ActiveRelay(BOB)
        await inject(system, ALICE, attacker.forge(ALICE, public_bundle(system, ALICE), b"x"))
        genuine = await system.send(BOB, "alice@acme", "the real bob")
        assert await system.wait_delivered(genuine)
        await handled(system, ALICE, attacker.forged[-1][1])
        assert [a["device"] for a in identity_alarms(system, ALICE)] == [BOB]
        texts = [e["text"] for e in system.events.events(kind="device.received", actor=ALICE)]
        assert texts == ["the real bob"]


async def test_sending_starts_no_session_with_another_key_for_a_verified_device(
    tmp_path: Path,
) -> None:
    """Alice verified bob's safety number; her session with bob's phone is gone (say, a
    restore). The operator now serves bob's bundle under a key of its own, and logs it:
    the log proves it, but it is not the verified key, so alice starts no session and
    seals nothing for that device."""
    async with System(default_cast(), state_dir=tmp_path) as system:
        await converse(system, [(BOB, "alice@acme", "hi"), (ALICE, "bob@acme", "hi")])
        alice = system.devices[ALICE]
        number = alice.safety_number(BOB)
        assert number is not None
        alice.mark_verified(BOB, number)
        alice.crypto._sessions.pop(BOB)  # the session is lost
        attacker = ActiveRelay(BOB)
        write_log_entry(system, attacker.log_entry(), BOB)
        spk = attacker.crypto.signed_prekey()
        with sqlite3.connect(system.state_dir / "relay.sqlite") as db:
            db.execute(
                "UPDATE devices SET identity = ?, spk_id = ?, spk_key = ?, spk_sig = ?"
                " WHERE device = ?",
                (b64encode(attacker.identity.encode()), spk["id"], spk["key"], spk["sig"], BOB),
            )
            db.execute("DELETE FROM one_time_prekeys WHERE device = ?", (BOB,))
        alice.forget_device_lists()
        sent = await system.send(ALICE, "bob@acme", "for bob's eyes")
        assert BOB not in sent.sent.devices
        (alarm,) = identity_alarms(system, ALICE)
        assert (alarm["device"], alarm["op"], alarm["alarm_kind"]) == (
            BOB,
            "bundles",
            "verified-identity-changed",
        )
        assert not alice.crypto.has_session(BOB)
