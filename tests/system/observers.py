"""Every observer's row as the report counts it, and what it really opened.

``observers(system, image_of)`` has the lab order the attacks the report needs (an image
of ``image_of``, a copy of the relay's store, the escrow key if there is one), asks every
observer for its row over the plane (``measure``), and combines the rows with the
aggregator (``doormat.exposure``). The counts are the report's. ``opened`` is what the
observer's own process decrypted when it computed its row (the same code, asked in
process): the tests compare it with what was really typed, which no row carries.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from doormat.exposure import aggregate
from doormat.system import System
from infra.observer import gather_rows
from wire.ids import ATTACKER_ID
from wire.plane import MessageKey


@dataclass
class Observed:
    name: str
    captured: int
    readable: int
    metadata_records: int
    keys: list[str]
    opened: dict[MessageKey, bytes] = field(default_factory=dict, repr=False)


def opened_in_process(system: System) -> dict[str, dict[MessageKey, bytes]]:
    """What each observer's own process opened (plaintext: never on the plane)."""
    out: dict[str, dict[MessageKey, bytes]] = {}
    tap = system.government_controls.measurement()
    if tap is not None:
        out[tap.row.observer] = tap.opened
    for m in (system.attacker.escrow(), system.attacker.device_image()):
        if m is not None:
            out[m.row.observer] = m.opened
    for name, server in system.servers.items():
        if server.archive is not None:
            out[f"enterprise:{name}"] = {
                (r.sender, r.id): r.text.encode() for r in server.archive.records()
            }
    out["agency"] = {
        (r.record["from"], r.record["id"]): (r.text or "").encode()
        for r in system.agency.received
        if r.readable
    }
    return out


async def observers(system: System, image_of: str | None = None) -> dict[str, Observed]:
    lab = system.lab
    assert lab is not None and system.observer is not None
    if image_of is not None:
        await lab.call(ATTACKER_ID, "attack.image-device", device=image_of)
    await lab.call(ATTACKER_ID, "attack.breach-relay")
    await lab.call(ATTACKER_ID, "attack.steal-escrow-key")
    services = ["relay", "tap", "agency", *system.enterprises, "attacker"]
    counts = aggregate(await gather_rows(system.observer, services))
    opened = opened_in_process(system)
    return {
        o.name: Observed(o.name, o.captured, o.readable, o.metadata_records, o.keys,
                         opened.get(o.name, {}))
        for o in counts.observers
    }


async def forward_secrecy(system: System) -> dict[str, object] | None:
    """The device-image attacker's forward-secrecy counts, from its row."""
    assert system.observer is not None
    await system.lab.call(ATTACKER_ID, "attack.breach-relay")  # type: ignore[union-attr]
    return aggregate(await gather_rows(system.observer, ["relay", "attacker"])).forward_secrecy
