"""The exposure report: for each observer, what it captured and what it could read.

This is the lab's central measurement, so every number comes from an action, never
from the mode a scenario ran in:

* ``captured`` - distinct messages (as users sent them: a message fanned out to several
  devices counts once) of which the observer holds at least one envelope's bytes;
* ``readable`` - of those, how many it actually opened: some key it actually holds
  decrypted at least one captured envelope of the message, and the AEAD tag verified;
* ``metadata_records`` - the metadata records it holds (one per captured envelope:
  sender, recipient, time, size).

An observer is given the raw envelope bytes it captured and a list of ``Reader``s, one
per key it holds. An observer with no keys (the relay) runs no reader, so it reads
nothing - and the tests check the converse too: plaintexts never occur in its bytes.

``observers_of(system, image)`` assesses every observer of a running ``System``: the
relay, the tap, the agency, each enterprise archive, and the attackers (a stolen escrow
key, one stolen device image); the demo, the dashboard and the tests all use it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from doormat.attacks import DeviceImage, steal_escrow_key
from doormat.system import System
from interceptor.readers import Reader
from wire import envelope as wire_envelope
from wire.envelope import EnvelopeError


@dataclass
class ObserverResult:
    name: str
    captured: int
    readable: int
    metadata_records: int
    keys: list[str] = field(default_factory=list)
    # (sender device, message id) -> plaintext, for every message it opened
    opened: dict[tuple[str, str], bytes] = field(default_factory=dict, repr=False)

    def to_json(self) -> dict[str, Any]:
        return {
            "captured": self.captured,
            "readable": self.readable,
            "metadata_records": self.metadata_records,
            "keys_held": self.keys,
        }


def assess(name: str, captured: Iterable[bytes], readers: Sequence[Reader] = ()) -> ObserverResult:
    """Try every captured envelope with every key the observer holds."""
    messages: set[tuple[str, str]] = set()
    opened: dict[tuple[str, str], bytes] = {}
    records = 0
    for raw in captured:
        try:
            env = wire_envelope.parse(raw)
        except EnvelopeError:
            continue  # the relay only captures envelopes it accepted; nothing to count
        records += 1
        key = (env.sender, env.id)
        messages.add(key)
        if key in opened:
            continue
        for reader in readers:
            text = reader.try_open(env)
            if text is not None:
                opened[key] = text
                break
    return ObserverResult(
        name=name,
        captured=len(messages),
        readable=len(opened),
        metadata_records=records,
        keys=[r.name for r in readers],
        opened=opened,
    )


def report(
    scenario: dict[str, Any],
    messages_sent: int,
    messages_delivered: int,
    observers: Sequence[ObserverResult],
    **extra: Any,
) -> dict[str, Any]:
    return {
        "scenario": scenario,
        "messages_sent": messages_sent,
        "messages_delivered": messages_delivered,
        "observers": {o.name: o.to_json() for o in observers},
        **extra,
    }


# -- the observers of a running system ------------------------------------------------

# Whose phone the device-image attacker extracts (another enterprise than most senders).
VICTIM_USER_INDEX = 2


def take_image(system: System, device: str, taken_at: int) -> DeviceImage:
    return DeviceImage.take(
        device,
        system.state_dir / f"{device}.sqlite",
        system.state_dir / "stolen" / f"{device}.image.sqlite",
        taken_at,
    )


def observers_of(system: System, image: DeviceImage) -> list[ObserverResult]:
    """Every observer, from the bytes it captured and the keys it holds."""
    assert system.relay is not None
    relay_bytes = list(system.relay.captured())
    observers = [assess("relay", relay_bytes, readers=())]
    if system.tap is not None and (system.li == "blanket" or system.government.ghosts):
        # A ghost's envelope reaches the tap twice (mirror and ghost inbox): count it once.
        tap_bytes = list(
            dict.fromkeys([*system.tap.captured("mirror"), *system.tap.captured("ghost")])
        )
        observers.append(assess("blanket-tap", tap_bytes, readers=system.tap.readers))
    received = system.agency.received
    if received:
        captured, readable, iri = system.agency.exposure()
        observers.append(
            ObserverResult("agency", captured, readable, iri, keys=["agency delivery key"])
        )
    for name, server in system.servers.items():
        if server.archive is not None:
            records = server.archive.records()
            messages = {(r.sender, r.id) for r in records}
            # Each record was opened (HPKE) with the archive key by ingest(): real reads.
            observers.append(
                ObserverResult(
                    f"enterprise:{name}",
                    len(messages),
                    len(messages),
                    len(records),
                    keys=[f"{name} archive key"],
                )
            )
    if system.government.escrow_key is not None:
        observers.append(
            assess(
                "attacker:escrow-key",
                relay_bytes,
                readers=[steal_escrow_key(system.government.escrow_key)],
            )
        )
    observers.append(assess("attacker:device-image", relay_bytes, readers=image.readers()))
    return observers


def forward_secrecy(
    system: System, image: DeviceImage, before: set[tuple[str, str]]
) -> dict[str, Any]:
    """What one stolen device image reveals of the messages sent *before* it was taken:
    with the ratchet alone (its own state), and with everything in the image."""
    assert system.relay is not None
    earlier = [raw for raw in system.relay.captured() if _key(raw) in before]
    ratchet_only = assess("ratchet", earlier, readers=[image.ratchet_reader()])
    whole_image = assess("image", earlier, readers=image.readers())
    return {
        "device": image.device,
        "image_taken_after_message": image.taken_at,
        "messages_before": len(before),
        "readable_with_ratchet_alone": ratchet_only.readable,
        "readable_with_whole_image": whole_image.readable,
    }


def _key(raw: bytes) -> tuple[str, str]:
    env = wire_envelope.parse(raw)
    return (env.sender, env.id)
