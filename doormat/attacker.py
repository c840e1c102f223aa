"""An attacker as a party of its own (account ``attacker``): it holds only what it
stole, and measures what that reads.

What it steals it obtains from the owner, by a simulated breach the lab orders (each an
evented control to that owner, yielding only what a breach of that party yields):

* ``attack.breach-relay``: a copy of the relay's store (``breach.store`` to the relay):
  every envelope the operator keeps - what an insider, a breach or a court order
  against the operator yields. Every other attack is tried on this copy.
* ``attack.steal-escrow-key``: the escrow private key from the government's vault
  (``breach.escrow-key`` to the tap), if there is one.
* ``attack.image-device {device}``: an image of one device's storage
  (``breach.image`` to that device), with a fresh copy of the relay's store taken at
  the same moment: the messages in that copy are the ones sent *before* the theft.

After each attack it reports ``attacker.read`` (what the stolen material read of its
relay copy: counts, how many users' messages, a sample), and on ``measure`` its rows
(``wire.plane.ExposureRow``): ``attacker:escrow-key`` and ``attacker:device-image``, the
latter with the forward-secrecy counts of the messages sent before the theft (what the
ratchet state alone opens, and everything in the image).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from doormat.attacks import DeviceImage
from infra.plane import ControlError, Handler, Measurer, Plane
from interceptor.measure import Measurement, measure_envelopes
from interceptor.readers import EscrowReader
from wire import envelope as wire_envelope
from wire.b64 import B64Error, b64decode
from wire.control import ControlRefused, Request
from wire.envelope import EnvelopeError
from wire.events import EventLog
from wire.ids import ATTACKER_ID, RELAY_ID, TAP_ID, user_of
from wire.plane import ExposureRow, MessageKey

ESCROW_ROW = "attacker:escrow-key"
IMAGE_ROW = "attacker:device-image"


@dataclass
class Image:
    """One stolen device image and the messages carried before it was taken."""

    image: DeviceImage
    before: set[MessageKey] = field(default_factory=set)


@dataclass
class Loot:
    """Everything the attacker holds: stolen copies, nothing of its own."""

    relay_copy: list[bytes] | None = None
    escrow_key: X25519PrivateKey | None = None
    image: Image | None = None


def message_keys(raws: list[bytes]) -> dict[MessageKey, set[str]]:
    """(sender, id) -> recipients, of the envelopes in a relay copy."""
    out: dict[MessageKey, set[str]] = {}
    for raw in raws:
        try:
            env = wire_envelope.parse(raw)
        except EnvelopeError:
            continue
        out.setdefault((env.sender, env.id), set()).add(env.recipient)
    return out


def read_fields(m: Measurement, raws: list[bytes], victim_user: str | None) -> dict[str, Any]:
    """What an attack read, as ``attacker.read`` reports it (no key, one sample)."""
    to = message_keys(raws)
    users = {user_of(sender) for sender, _ in m.opened}
    others = 0
    if victim_user is not None:
        for sender, mid in m.opened:
            involved = {user_of(sender)} | {user_of(r) for r in to.get((sender, mid), set())}
            if victim_user not in involved:
                others += 1
    fields: dict[str, Any] = {
        "captured": len(m.row.captured),
        "readable": len(m.row.readable),
        "users_read": len(users),
        "others_read": others,
        "keys": ", ".join(m.row.keys_held) or "none",
    }
    sample = next(iter(m.opened.values()), None)
    if sample is not None:
        fields["sample"] = sample.decode(errors="replace")[:200]
    return fields


class Attacker:
    """The attacker's measurements over what it stole (sans I/O but for image files)."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self.loot = Loot()
        self._n = itertools.count(1)

    def escrow(self) -> Measurement | None:
        if self.loot.escrow_key is None or self.loot.relay_copy is None:
            return None
        reader = EscrowReader(self.loot.escrow_key, name="stolen escrow key")
        return measure_envelopes(ESCROW_ROW, self.loot.relay_copy, [reader])

    def device_image(self) -> Measurement | None:
        held = self.loot.image
        if held is None or self.loot.relay_copy is None:
            return None
        return measure_envelopes(IMAGE_ROW, self.loot.relay_copy, held.image.readers())

    def forward_secrecy(self) -> dict[str, Any] | None:
        """Of the messages sent before the theft: what the ratchet state alone opens,
        and everything in the image."""
        held = self.loot.image
        if held is None or self.loot.relay_copy is None:
            return None
        earlier = [raw for raw in self.loot.relay_copy if _key(raw) in held.before]
        ratchet = measure_envelopes("ratchet", earlier, [held.image.ratchet_reader()])
        whole = measure_envelopes("image", earlier, held.image.readers())
        return {
            "device": held.image.device,
            "image_taken_after_message": held.image.taken_at,
            "messages_before": len(held.before),
            "readable_with_ratchet_alone": len(ratchet.row.readable),
            "readable_with_whole_image": len(whole.row.readable),
        }

    def rows(self) -> list[ExposureRow]:
        rows = []
        escrow = self.escrow()
        if escrow is not None:
            rows.append(escrow.row)
        image = self.device_image()
        if image is not None:
            fs = self.forward_secrecy()
            if fs is not None:
                image.row.detail["forward_secrecy"] = fs
            rows.append(image.row)
        return rows

    def keep_image(self, device: str, data: bytes, before: set[MessageKey]) -> Image:
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / f"{device}.image-{next(self._n)}.sqlite"
        path.write_bytes(data)
        held = Image(DeviceImage(device, path, len(before)), before)
        self.loot.image = held
        return held


class AttackerControls:
    def __init__(self, attacker: Attacker, plane: Plane, events: EventLog,
                 *, relay: str = RELAY_ID, government: str = TAP_ID) -> None:
        self.attacker = attacker
        self.plane = plane
        self.events = events
        self.relay = relay
        self.government = government
        self.measurer = Measurer(ATTACKER_ID, events, attacker.rows)
        plane.serve_all(self.handlers())

    def handlers(self) -> dict[str, Handler]:
        return {
            "attack.breach-relay": self.breach_relay,
            "attack.steal-escrow-key": self.steal_escrow_key,
            "attack.image-device": self.image_device,
            "measure": self.measurer.handle,
        }

    async def _relay_copy(self) -> list[bytes]:
        try:
            answer = await self.plane.call(self.relay, "breach.store", timeout=120.0)
            raws = [b64decode(e, "envelope") for e in answer["envelopes"]]
        except (ControlError, TimeoutError, KeyError, B64Error) as exc:
            raise ControlRefused(f"the breach of the relay failed: {exc}") from None
        self.attacker.loot.relay_copy = raws
        return raws

    async def breach_relay(self, request: Request) -> dict[str, Any]:
        raws = await self._relay_copy()
        return {"envelopes": len(raws), "messages": len(message_keys(raws))}

    async def steal_escrow_key(self, request: Request) -> dict[str, Any]:
        try:
            answer = await self.plane.call(self.government, "breach.escrow-key")
        except (ControlError, TimeoutError) as exc:
            raise ControlRefused(f"the breach of the government failed: {exc}") from None
        raws = self.attacker.loot.relay_copy or await self._relay_copy()
        key = answer.get("escrow_private_key")
        if key is None:
            fields: dict[str, Any] = {
                "captured": len(message_keys(raws)), "readable": 0, "users_read": 0,
                "others_read": 0,
                "keys": "none: the government holds no escrow key (no escrow mandate yet)",
            }
        else:
            self.attacker.loot.escrow_key = X25519PrivateKey.from_private_bytes(
                b64decode(key, "escrow key", length=32))
            m = self.attacker.escrow()
            assert m is not None
            fields = read_fields(m, raws, None)
        self.events.emit(ATTACKER_ID, "attacker.read", attack="escrow-key", device="", **fields)
        return {"attack": "escrow-key", **fields}

    async def image_device(self, request: Request) -> dict[str, Any]:
        device = request.args["device"]
        try:
            answer = await self.plane.call(device, "breach.image", timeout=60.0)
            data = b64decode(answer["image"], "image")
        except (ControlError, TimeoutError, KeyError, B64Error) as exc:
            raise ControlRefused(f"the breach of {device} failed: {exc}") from None
        raws = await self._relay_copy()  # taken at the same moment: what came before
        held = self.attacker.keep_image(device, data, set(message_keys(raws)))
        m = measure_envelopes(IMAGE_ROW, raws, held.image.readers())
        fields = read_fields(m, raws, user_of(device))
        self.events.emit(ATTACKER_ID, "attacker.read", attack="device-image", device=device,
                         **fields)
        return {"attack": "device-image", "device": device,
                "taken_after_message": held.image.taken_at, **fields}

    async def close(self) -> None:
        await self.measurer.close()


def _key(raw: bytes) -> MessageKey | None:
    try:
        env = wire_envelope.parse(raw)
    except EnvelopeError:
        return None
    return (env.sender, env.id)


__all__ = ["ESCROW_ROW", "IMAGE_ROW", "Attacker", "AttackerControls", "Loot", "read_fields"]
