"""A device's prekeys over time: refill the one-time prekeys, rotate the signed prekey on a
schedule, delete the replaced one after its grace period (issue 12, point 8). A mixin
of ``clients.device.Device``.

* **Refill.** The relay hands a device's one-time prekeys out without the device
  knowing (to anyone who asks for its bundle), so the device asks the relay how many it
  still holds (the ``prekeys`` op) and, below half of its target, publishes enough new
  ones to get back to the target. A relay that lies ("none left", every time) cannot
  make the device hoard private keys: it holds at most ``ONE_TIME_PREKEY_CAP`` times
  the target unused, and makes no more past that.
* **Rotation.** The signed prekey is replaced once it is ``rotate_after`` old; the
  replaced one stays for first messages already under way (``grace``), then it is
  deleted (and at most two replaced ones are kept in any case). From then on a thief of
  the device's state cannot redo X3DH for a first message that came without a one-time
  prekey (docs/crypto.md, "Prekeys over time").

When: after every (re)connection (refill and rotation; not deletion, so that a device
back from a long absence first opens what waited for it), every ``interval`` seconds,
and after each first-contact message (it spent a one-time prekey). The private halves
are saved before anything is published, so a crash never leaves the relay handing out
a key the device lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from clients.crypto import DeviceCrypto
from clients.store import DeviceStore
from infra.link import Link
from wire.events import EventLog, now_ms

log = logging.getLogger(__name__)

DAY = 86_400.0
ONE_TIME_PREKEY_CAP = 5  # unused one-time prekeys held, as a multiple of the target
NEVER = 2**62


class PrekeyUpkeep:
    """A mixin of ``Device``: what it needs from the device is declared here."""

    id: str
    crypto: DeviceCrypto
    _store: DeviceStore
    _events: EventLog
    _link: Link
    _n_otk: int  # the target number of one-time prekeys at the relay
    prekey_interval: float  # seconds between checks
    signed_prekey_rotation: float  # seconds
    signed_prekey_grace: float  # seconds
    _upkeep: asyncio.Task[None] | None
    _upkeep_again: bool
    _upkeep_timer: asyncio.Task[None] | None

    async def maintain_prekeys(
        self, now: int | None = None, *, expire: bool = True
    ) -> dict[str, Any]:
        """One round: ask the relay for the counts, refill, rotate, delete; returns what
        was done (also the ``device.prekeys`` event). ``now`` (ms) lets the demo and the
        tests move the device's clock forward."""
        when = now_ms() if now is None else now
        answer = await self._link.request("prekeys")
        held = answer.get("one_time_prekeys")
        if not isinstance(held, int) or isinstance(held, bool) or held < 0:
            raise ValueError(f"the relay's prekeys answer is malformed: {held!r:.40}")
        material: dict[str, Any] = {}
        added = 0
        if held < max(1, self._n_otk // 2):
            room = ONE_TIME_PREKEY_CAP * self._n_otk - self.crypto.one_time_prekeys_left
            added = max(0, min(self._n_otk - held, room))
            if added:
                material["one_time_prekeys"] = self.crypto.new_one_time_prekeys(added)
        rotated, deleted = self.crypto.maintain_signed_prekeys(
            when,
            rotate_after_ms=int(self.signed_prekey_rotation * 1000),
            grace_ms=int(self.signed_prekey_grace * 1000) if expire else NEVER,
        )
        if rotated is not None:
            material["signed_prekey"] = rotated
        # The private halves are on disk before the relay can hand the public ones out.
        self._store.save_crypto(self.crypto.to_bytes())
        if material:
            identity = self.crypto.publish_material()["identity"]
            await self._link.request("publish", identity=identity, **material)
        done = {
            "held": held,
            "added": added,
            "capped": held < max(1, self._n_otk // 2) and added < self._n_otk - held,
            "rotated": None if rotated is None else rotated["id"],
            "deleted": deleted,
            "signed_prekeys": self.crypto.signed_prekey_ids,
        }
        self._events.emit(self.id, "device.prekeys", **done)
        return done

    def _upkeep_soon(self, *, expire: bool = True) -> None:
        """A round in the background (one at a time; a request meanwhile runs another)."""
        if self._upkeep is None or self._upkeep.done():
            self._upkeep = asyncio.get_running_loop().create_task(self._upkeep_rounds(expire))
        else:
            self._upkeep_again = True

    async def _upkeep_rounds(self, expire: bool) -> None:
        while True:
            self._upkeep_again = False
            try:
                await self.maintain_prekeys(expire=expire)
            except Exception as exc:  # the next round (timer, connection) tries again
                log.warning("%s: prekey upkeep failed: %s", self.id, exc)
            if not self._upkeep_again:
                return

    def _start_upkeep_timer(self) -> None:
        if self._upkeep_timer is None and self.prekey_interval > 0:
            self._upkeep_timer = asyncio.get_running_loop().create_task(self._every_interval())

    async def _every_interval(self) -> None:
        while True:
            await asyncio.sleep(self.prekey_interval)
            if self._link.connected:
                self._upkeep_soon()

    async def _stop_upkeep(self) -> None:
        for task in (self._upkeep_timer, self._upkeep):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
