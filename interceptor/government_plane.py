"""The government on the plane (account ``tap``): its blanket tap, its mandates and the
keys it keeps, in one party.

* ``mandate.set {backdoor}`` (the lab, standing in for the legislature): the government
  makes the keys the back door needs (``interceptor.government``), has the vendor build
  and sign the client build every device must run (``build.make``; the vendor ships it,
  each device checks the vendor's signature), and for the ghost back door serves its
  mandate on the relay's directory (``ghost.set``) and enrols a ghost device of its own
  for every user, whose keys it keeps. Lifting the ghost mandate switches the ghosts off
  at the directory (their log entries stay).
* ``breach.escrow-key`` (an attacker, by a simulated breach of the government's vault):
  a copy of the escrow private key, if the government holds one; ``tap.breached`` says
  it was taken.
* ``measure`` (the observer): the tap's row, from the envelopes in its own store, tried
  with every key the government holds now (``interceptor.measure``). It exists whenever
  the store holds captures, whatever the relay's switch says now.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any

from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

from clients.crypto import DeviceCrypto
from infra.plane import Handler, Measurer, Plane
from interceptor.government import Government
from interceptor.measure import Measurement, measure_envelopes
from interceptor.tap import Tap
from wire.b64 import b64encode
from wire.control import Request
from wire.events import Event
from wire.ids import RELAY_ID, TAP_ID, VENDOR_ID
from wire.plane import ExposureRow

OBSERVER_NAME = "blanket-tap"
GHOST_PREKEYS = 50


class GovernmentControls:
    def __init__(
        self,
        tap: Tap,
        government: Government,
        plane: Plane,
        *,
        users: Sequence[str],
        relay: str = RELAY_ID,
        vendor: str = VENDOR_ID,
        measure_interval: float = 1.0,
    ) -> None:
        self.tap = tap
        self.government = government
        self.plane = plane
        self.users = list(users)
        self.relay = relay
        self.vendor = vendor
        self.ghosts_on = False
        self.measurer = Measurer(TAP_ID, tap.events, self._rows, measure_interval)
        plane.serve_all(self.handlers())
        tap.events.subscribe(self._on_event)

    def handlers(self) -> dict[str, Handler]:
        return {
            "mandate.set": self.mandate_set,
            "breach.escrow-key": self.breach_escrow_key,
            "measure": self.measurer.handle,
        }

    # -- the mandate -----------------------------------------------------------------------

    async def mandate_set(self, request: Request) -> dict[str, Any]:
        backdoor = request.args["backdoor"]
        self.government.mandate(backdoor)
        build = self.government.client_build()
        keys: dict[str, str] = {}
        if build.escrow_public_key is not None:
            keys["escrow_public_key"] = b64encode(build.escrow_public_key)
        if build.global_key is not None:
            keys["global_key"] = b64encode(build.global_key)
        shipped = await self.plane.call(self.vendor, "build.make", name=build.name,
                                        timeout=300.0, **keys)
        if backdoor == "ghost":
            await self.install_ghosts()
        elif self.ghosts_on:
            # Lifting the mandate: the directory stops listing the ghosts.
            await self.plane.call(self.relay, "ghost.set", on=False)
            self.ghosts_on = False
        result = {"backdoor": backdoor, "build": build.name, "version": shipped.get("version"),
                  "installed": shipped.get("installed"), "refused": shipped.get("refused")}
        self.tap.events.emit("government", "government.mandate", **result)
        return result

    async def install_ghosts(self) -> None:
        """The ghost back door: the relay's directory lets the government add a device of
        its own to every user, and unmodified clients will encrypt to it."""
        await self.plane.call(self.relay, "ghost.set", on=True)
        self.ghosts_on = True
        for user in self.users:
            ghost = f"{user}.gov"
            if ghost in self.government.ghosts:
                continue
            crypto = DeviceCrypto.create(ghost, one_time_prekeys=GHOST_PREKEYS)
            await self.tap.link.request("enrol", user=user, device=ghost)
            await self.tap.link.request("publish", device=ghost, **crypto.publish_material())
            self.government.ghosts[ghost] = crypto

    # -- a breach of the vault ---------------------------------------------------------------

    def breach_escrow_key(self, request: Request) -> dict[str, Any]:
        key = self.government.escrow_key
        raw = None if key is None else key.private_bytes(
            Encoding.Raw, PrivateFormat.Raw, NoEncryption())
        self.tap.events.emit(TAP_ID, "tap.breached", by=request.sender, what="escrow key",
                             held=raw is not None)
        return {"escrow_private_key": None if raw is None else b64encode(raw)}

    # -- its own row ------------------------------------------------------------------------

    def measurement(self) -> Measurement | None:
        """What the tap holds and reads now (None: its store holds nothing)."""
        if self.tap.count() == 0:
            return None
        # A ghost's envelope reaches the tap twice (mirror and ghost inbox): count it once.
        raws = list(dict.fromkeys([*self.tap.captured("mirror"), *self.tap.captured("ghost")]))
        return measure_envelopes(OBSERVER_NAME, raws, self.tap.readers)

    def _rows(self) -> list[ExposureRow]:
        m = self.measurement()
        return [] if m is None else [m.row]

    def _on_event(self, event: Event) -> None:
        if event["kind"] == "tap.captured":
            with contextlib.suppress(RuntimeError):
                self.measurer.poke()

    async def close(self) -> None:
        await self.measurer.close()


__all__ = ["OBSERVER_NAME", "GovernmentControls"]
