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
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

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
