"""Prekeys over time on real devices (issue 12, point 8): a drained pool is refilled, the
signed prekey rotates on schedule, a replaced one still opens a late first message
during its grace period and not after, and a relay that lies about the count cannot
make a device hoard private keys."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest

from clients.device import ONE_TIME_PREKEYS
from clients.upkeep import ONE_TIME_PREKEY_CAP
from doormat.cast import default_cast
from doormat.system import System
from tests.support.polling import until
from wire.events import now_ms

CAROL = "carol@globex.phone"
DAY = 86_400_000


def relay_row(system: System, device: str) -> tuple[int, int]:
    """(one-time prekeys the relay holds for the device, its signed prekey id)."""
    with sqlite3.connect(system.state_dir / "relay.sqlite") as db:
        (held,) = db.execute(
            "SELECT count(*) FROM one_time_prekeys WHERE device = ?", (device,)
        ).fetchone()
        (spk,) = db.execute("SELECT spk_id FROM devices WHERE device = ?", (device,)).fetchone()
    return int(held), int(spk)


async def carol_bundle(system: System, requester: str) -> dict[str, Any]:
    answer = await system.devices[requester]._link.request(
        "bundles", user="carol@globex", devices=[CAROL]
    )
    (bundle,) = answer["bundles"]
    return dict(bundle)


async def test_a_drained_pool_is_refilled(tmp_path: Path) -> None:
    async with System(default_cast(), state_dir=tmp_path) as system:
        carol = system.devices[CAROL]
        await until(lambda: system.events.events(kind="device.prekeys", actor=CAROL), 10)
        assert relay_row(system, CAROL)[0] == ONE_TIME_PREKEYS
        for requester in ("alice@acme.phone", "alice@acme.laptop", "bob@acme.phone",
                          "dave@globex.phone"):  # fmt: skip
            for _ in range(3):
                await carol_bundle(system, requester)
        assert relay_row(system, CAROL)[0] == ONE_TIME_PREKEYS - 12
        done = await carol.maintain_prekeys()
        assert (done["held"], done["added"]) == (ONE_TIME_PREKEYS - 12, 12)
        assert relay_row(system, CAROL)[0] == ONE_TIME_PREKEYS


async def test_rotation_grace_and_deletion(tmp_path: Path) -> None:
    async with System(default_cast(), state_dir=tmp_path) as system:
        carol = system.devices[CAROL]
        start = now_ms()
        late_bundles = [await carol_bundle(system, d) for d in ("dave@globex.phone",
                                                                "bob@acme.phone")]  # fmt: skip
        assert {b["signed_prekey"]["id"] for b in late_bundles} == {1}
        done = await carol.maintain_prekeys(start + 7 * DAY)
        assert done["rotated"] == 2 and done["deleted"] == []
        assert relay_row(system, CAROL)[1] == 2
        assert (await carol_bundle(system, "alice@acme.phone"))["signed_prekey"]["id"] == 2
        # Dave sends a first message with the bundle fetched before the rotation: the
        # replaced signed prekey still opens it during its grace period.
        dave = system.devices["dave@globex.phone"]
        dave.crypto.start_session(CAROL, late_bundles[0])
        d = await system.send("dave@globex.phone", "carol@globex", "late but in time")
        assert await system.wait_delivered(d)
        # After the grace period it is deleted: a first message sealed for it no longer
        # opens (its keys are gone from the device, and from any later image of it).
        done = await carol.maintain_prekeys(start + 21 * DAY)
        assert done["deleted"] == [1] and done["signed_prekeys"] == [2, 3]  # rotated again
        bob = system.devices["bob@acme.phone"]
        bob.crypto.start_session(CAROL, late_bundles[1])
        d = await system.send("bob@acme.phone", "carol@globex", "too late")
        await until(
            lambda: [e for e in system.events.events(kind="device.unreadable", actor=CAROL)
                     if e["id"] == d.sent.id], 10)  # fmt: skip
        (e,) = [e for e in system.events.events(kind="device.unreadable", actor=CAROL)
                if e["id"] == d.sent.id]  # fmt: skip
        assert "UnknownPrekey" in e["reason"]


async def test_a_relay_that_lies_about_the_count_cannot_make_a_device_hoard(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with System(default_cast(), state_dir=tmp_path) as system:
        carol = system.devices[CAROL]
        real = carol._link.request

        async def lying(op: str, **fields: Any) -> dict[str, Any]:
            if op == "prekeys":
                return {"ok": True, "one_time_prekeys": 0, "signed_prekey_id": 1}
            return await real(op, **fields)

        monkeypatch.setattr(carol._link, "request", lying)
        for _ in range(2 * ONE_TIME_PREKEY_CAP):
            await carol.maintain_prekeys()
        assert carol.crypto.one_time_prekeys_left == ONE_TIME_PREKEY_CAP * ONE_TIME_PREKEYS
        last = system.events.events(kind="device.prekeys", actor=CAROL)[-1]
        assert last["added"] == 0 and last["capped"] is True


async def test_what_images_open_of_first_contacts_with_and_without_deletion(
    tmp_path: Path,
) -> None:
    """The demo report's first_contact section on a run where the relay withheld carol's
    one-time prekeys before dave's first message: the image at the theft opens that one
    (X3DH redone with the signed prekey), not alice's (its one-time prekey was deleted);
    an image from before both opens both; after rotation and the grace period, none."""
    from doormat.attacks import DeviceImage, first_contact_exposure

    async with System(default_cast(), state_dir=tmp_path) as system:
        carol = system.devices[CAROL]

        def image(label: str) -> DeviceImage:
            return DeviceImage.take(CAROL, tmp_path / f"{CAROL}.sqlite",
                                    tmp_path / "stolen" / f"{label}.sqlite", 0)  # fmt: skip

        early = image("early")
        rounds = len(system.events.events(kind="device.prekeys", actor=CAROL))
        a = await system.send("alice@acme.phone", "carol@globex", "with a one-time prekey")
        assert await system.wait_delivered(a)
        # The top-up round that alice's first contact started is over (it would put
        # one-time prekeys back after the operator withholds them below).
        await until(lambda: len(system.events.events(kind="device.prekeys", actor=CAROL))
                    > rounds and (carol._upkeep is None or carol._upkeep.done()), 10)  # fmt: skip
        with sqlite3.connect(system.state_dir / "relay.sqlite") as db:
            db.execute("DELETE FROM one_time_prekeys WHERE device = ?", (CAROL,))
        d = await system.send("dave@globex.phone", "carol@globex", "without one")
        assert await system.wait_delivered(d)
        theft = image("theft")
        start = now_ms()
        await carol.maintain_prekeys(start + 7 * DAY)
        await carol.maintain_prekeys(start + 21 * DAY)
        later = image("later")
        assert system.relay is not None
        before = {("alice@acme.phone", a.sent.id), ("dave@globex.phone", d.sent.id)}
        report = first_contact_exposure(system.relay.captured(), before, theft, early, later)
        assert report == {
            "device": CAROL,
            "messages": 2,
            "without_one_time_prekey": 1,
            "opened_by_image": 1,
            "opened_if_no_key_were_deleted": 2,
            "opened_after_rotation": 0,
        }
