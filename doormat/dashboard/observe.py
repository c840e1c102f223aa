"""The dashboard's measurements: the exposure matrix, the attackers, the operator's search.

The matrix is read over the plane: every observer computes its own row (real
decryption with the keys it holds, in its own service) and the dashboard only combines
them (``doormat.exposure.aggregate``, which holds no key). The attacks are lab controls
to the attacker service, which breaches the owner of what it steals and reports what it
read (``attacker.read``); the operator's search runs over the relay's own store
(``operator.searched``). Exercises are solved by these events like by any other.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence
from typing import Any

from doormat.active_relay import NAME as ACTIVE_RELAY
from doormat.active_relay import ActiveRelay
from doormat.exposure import MEASURED_SERVICES, VICTIM_USER_INDEX, aggregate
from doormat.system import System
from infra.observer import Observer, gather_rows
from infra.plane import ControlError, Party
from interceptor.measure import measure_envelopes
from wire import envelope as wire_envelope
from wire.b64 import b64decode
from wire.envelope import EnvelopeError
from wire.ids import ATTACKER_ID
from wire.plane import ExposureRow

OPERATOR = "relay-operator"


def victim_device(system: System) -> str:
    """The device the demo's image attacker extracts (carol's phone in the default cast)."""
    users = system.cast.users
    return users[min(VICTIM_USER_INDEX, len(users) - 1)].device_ids[0]


def _observer(system: System) -> Observer:
    if system.observer is None:
        raise ValueError("the system is not started")
    return system.observer


def _lab(system: System) -> Party:
    if system.lab is None:
        raise ValueError("the system is not started")
    return system.lab


async def exposure(system: System, extra: Sequence[ExposureRow] = ()) -> dict[str, Any]:
    """The exposure matrix now: every observer's own row (``measure``: each computes it
    in its own service, from its own store, with the keys it holds), combined by
    ``doormat.exposure.aggregate``, which holds no key. The attackers' rows are what the
    attacker really stole (the attackers' pane's actions). ``extra``: rows measured in
    this process (the active relay's, ``active_relay_row``), counted like the others."""
    started = time.monotonic()
    services = [*MEASURED_SERVICES[:3], *system.enterprises, *MEASURED_SERVICES[3:]]
    rows = [*await gather_rows(_observer(system), services), *extra]
    counts = aggregate(rows)
    return {
        "computed_ms": time.time_ns() // 1_000_000,
        "elapsed_ms": round((time.monotonic() - started) * 1000, 1),
        "messages_sent": counts.messages_sent,
        "messages_delivered": counts.messages_delivered,
        "li": system.li,
        "backdoor": system.backdoor,
        "image_of": victim_device(system),
        "observers": [{"name": o.name, **o.to_json()} for o in counts.observers],
    }


def active_relay_row(system: System, attackers: Sequence[ActiveRelay]) -> ExposureRow:
    """The active relay's row: everything the relay's store holds, tried with the keys of
    every identity the operator forged in this system (``doormat.active_relay``): real
    decryption of what it really captured, the victims' replies sealed to its sessions."""
    assert system.relay is not None
    row = measure_envelopes(ACTIVE_RELAY, list(system.relay.captured()), list(attackers)).row
    row.keys_held = sorted({f"forged identity of {a.impersonate}" for a in attackers})
    return row


async def _attack(system: System, op: str, **args: Any) -> dict[str, Any]:
    try:
        answer = await _lab(system).call(ATTACKER_ID, op, timeout=120.0, **args)
    except ControlError as exc:
        raise ValueError(str(exc)) from None
    return {k: v for k, v in answer.items() if k not in ("req", "ok")}


async def steal_escrow(system: System) -> dict[str, Any]:
    """The lab has the attacker steal the government's escrow key (a breach of the tap)
    and try it on its copy of the relay's store; the attacker emits ``attacker.read``."""
    return await _attack(system, "attack.steal-escrow-key")


async def image_device(system: System, device: str) -> dict[str, Any]:
    """The lab has the attacker extract an image of one device's storage (a breach of
    the device) and try everything in it on its copy of the relay's store."""
    if device not in system.devices:
        raise ValueError(f"no running device {device!r}")
    return await _attack(system, "attack.image-device", device=device)


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
