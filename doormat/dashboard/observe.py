"""The dashboard's measurements: the exposure matrix, the attackers, the operator's search.

Each does real work on real bytes - decryption attempts with the keys a party holds -
and the slow part runs in a worker thread so the event loop (broker, relay, devices,
the page's stream) keeps going. What must be read in the loop's thread (the tap's SQLite
connection belongs to it) is copied first; the thread works on the copy.

The attackers and the operator's search report what they found as events on the
system's log (``attacker.read``, ``operator.searched``): they are actions a student
takes in the lab, and exercises are solved by them like by any other event.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from doormat.attacks import DeviceImage, steal_escrow_key
from doormat.exposure import VICTIM_USER_INDEX, assess, observers_of
from doormat.system import System
from wire import envelope as wire_envelope
from wire.b64 import b64decode
from wire.envelope import EnvelopeError
from wire.ids import user_of

OPERATOR = "relay-operator"
ATTACKER = "attacker"


class _Captured:
    """Stands in for a relay or a tap in a worker thread: the same ``captured()`` over a
    copy of the bytes, everything else from the real object."""

    def __init__(self, real: Any, copies: dict[str, list[bytes]]) -> None:
        self._real = real
        self._copies = copies

    def captured(self, kind: str = "mirror") -> Iterator[bytes]:
        return iter(self._copies.get(kind, self._copies.get("*", [])))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


class _Snapshot:
    """A system whose relay and tap answer ``captured()`` from copies (see module doc)."""

    def __init__(self, system: System) -> None:
        self._system = system
        assert system.relay is not None
        self.relay = _Captured(system.relay, {"*": list(system.relay.captured())})
        self.tap = None
        if system.tap is not None:
            self.tap = _Captured(system.tap, {
                "mirror": list(system.tap.captured("mirror")),
                "ghost": list(system.tap.captured("ghost")),
            })

    def __getattr__(self, name: str) -> Any:
        return getattr(self._system, name)


def victim_device(system: System) -> str:
    """The device the demo's image attacker extracts (carol's phone in the default cast)."""
    users = system.cast.users
    return users[min(VICTIM_USER_INDEX, len(users) - 1)].device_ids[0]


async def exposure(system: System) -> dict[str, Any]:
    """The exposure matrix now, from ``observers_of``: every observer's captured, readable
    and metadata counts, by real decryption with the keys it holds."""
    started = time.monotonic()
    snapshot = _Snapshot(system)
    taken_at = system.messages_sent
    victim = victim_device(system)
    image_path = system.state_dir / "stolen" / f"{victim}.dashboard.sqlite"

    def work() -> list[dict[str, Any]]:
        image = DeviceImage.take(victim, system.state_dir / f"{victim}.sqlite", image_path,
                                 taken_at)
        return [{"name": o.name, **o.to_json()} for o in observers_of(snapshot, image)]  # type: ignore[arg-type]

    try:
        observers = await asyncio.to_thread(work)
    except sqlite3.ProgrammingError:
        # Some observer reads through a connection owned by the loop's thread: measure
        # in the loop instead (correct, only not concurrent).
        snapshot = system  # type: ignore[assignment]
        observers = work()
    return {
        "computed_ms": time.time_ns() // 1_000_000,
        "elapsed_ms": round((time.monotonic() - started) * 1000, 1),
        "messages_sent": system.messages_sent,
        "messages_delivered": system.messages_delivered,
        "li": system.li,
        "backdoor": system.government.backdoor,
        "image_of": victim,
        "observers": observers,
    }


def _recipients(raws: list[bytes]) -> dict[tuple[str, str], set[str]]:
    out: dict[tuple[str, str], set[str]] = {}
    for raw in raws:
        try:
            env = wire_envelope.parse(raw)
        except EnvelopeError:
            continue
        out.setdefault((env.sender, env.id), set()).add(env.recipient)
    return out


def _attack_fields(result: Any, raws: list[bytes], victim_user: str | None) -> dict[str, Any]:
    to = _recipients(raws)
    opened = result.opened
    users = {user_of(sender) for sender, _ in opened}
    others = 0
    if victim_user is not None:
        for (sender, mid) in opened:
            involved = {user_of(sender)} | {user_of(r) for r in to.get((sender, mid), set())}
            if victim_user not in involved:
                others += 1
    sample = next(iter(opened.values()), None)
    fields: dict[str, Any] = {
        "captured": result.captured,
        "readable": result.readable,
        "users_read": len(users),
        "others_read": others,
        "keys": ", ".join(result.keys) or "none",
    }
    if sample is not None:
        fields["sample"] = sample.decode(errors="replace")[:200]
    return fields


async def steal_escrow(system: System) -> dict[str, Any]:
    """An attacker steals the government's escrow key and tries it on the relay's store
    (what an insider, a breach or a court order against the operator yields)."""
    assert system.relay is not None
    raws = list(system.relay.captured())
    key = system.government.escrow_key
    if key is None:
        fields = {"attack": "escrow-key", "device": "", "captured": len(_recipients(raws)),
                  "readable": 0, "users_read": 0, "others_read": 0,
                  "keys": "none: the government holds no escrow key (no escrow mandate yet)"}
    else:
        def work() -> dict[str, Any]:
            result = assess("attacker:escrow-key", raws, readers=[steal_escrow_key(key)])
            return _attack_fields(result, raws, None)

        fields = {"attack": "escrow-key", "device": "", **(await asyncio.to_thread(work))}
    system.events.emit(ATTACKER, "attacker.read", **fields)
    return fields


async def image_device(system: System, device: str) -> dict[str, Any]:
    """An attacker extracts an image of one device's storage and tries everything in it
    on the relay's store."""
    assert system.relay is not None
    if device not in system.devices:
        raise ValueError(f"no running device {device!r}")
    raws = list(system.relay.captured())
    path = system.state_dir / "stolen" / f"{device}.attack-{time.time_ns()}.sqlite"

    def work() -> dict[str, Any]:
        image = DeviceImage.take(device, system.state_dir / f"{device}.sqlite", path,
                                 system.messages_sent)
        try:
            result = assess("attacker:device-image", raws, readers=image.readers())
        finally:
            Path(path).unlink(missing_ok=True)
        return _attack_fields(result, raws, user_of(device))

    fields = {"attack": "device-image", "device": device, **(await asyncio.to_thread(work))}
    system.events.emit(ATTACKER, "attacker.read", **fields)
    return fields


def _contains(raw: bytes, needle: bytes) -> bool:
    if needle in raw:
        return True
    try:
        env = wire_envelope.parse(raw)
    except EnvelopeError:
        return False
    parts: list[bytes] = [env.header, env.body, env.prekey or b""]
    for v in env.ext.values():
        if isinstance(v, str):
            parts.append(v.encode())
            with contextlib.suppress(ValueError):
                parts.append(b64decode(v, "ext"))
    return any(needle in p for p in parts if isinstance(p, bytes | bytearray))


async def search_relay(system: System, query: str) -> dict[str, Any]:
    """The relay operator searches everything it stores for ``query``: the raw envelope
    bytes and every decoded field. It has no key, so this is all it can do."""
    assert system.relay is not None
    query = query.strip()
    if not 1 <= len(query) <= 200:
        raise ValueError("search for 1 to 200 characters")
    raws = list(system.relay.captured())
    needle = query.encode()

    def work() -> int:
        return sum(1 for raw in raws if _contains(raw, needle))

    found = await asyncio.to_thread(work)
    # Whether the query is something a user really wrote (so that "not found" means
    # something): compared with what the senders' own devices reported.
    was_sent = len(query) >= 4 and any(
        query.casefold() in str(e.get("text", "")).casefold()
        for e in system.events.events(kind="device.sent")
    )
    fields = {"query": query, "envelopes": len(raws), "found": found,
              "query_was_sent": was_sent}
    system.events.emit(OPERATOR, "operator.searched", **fields)
    return fields
