"""The exposure report: what each observer captured and could read, from the rows the
observers computed of themselves. This module holds no key and decrypts nothing.

Each observer (the relay, the blanket tap, the agency, each enterprise archive, each
attacker) measures itself in its own process, over the bytes in its own store, with the
keys it holds, and publishes its row (``wire.plane.ExposureRow``, the ``exposure.row``
event and the answer to ``measure``). ``aggregate`` combines the rows; it trusts no
claim it can check against the relay's record of the envelopes it carried (the relay's
row, ``carried``):

* ``messages_sent``: distinct messages (sender, id) the relay carried;
* ``messages_delivered``: those every recipient device acknowledged to the relay;
* per observer, ``captured``: the messages the relay carried of which the observer holds
  an envelope or a record; ``readable``: those of them it opened with a key it holds;
  ``metadata_records``: its records about messages the relay carried;
* a journal record of an enterprise archive counts only if its journalling device was
  the message's sender (``out``) or a recipient the relay carried it to (``in``): a
  device that seals records "of" messages that were never sent, or that it never
  received, inflates nothing (issue 12, point 5).

What was left out is reported too (``ignored``: per observer, the messages and journal
records that did not count), so that a fabricated claim is visible rather than silently
dropped.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from wire.plane import ExposureRow, MessageKey

RELAY_ROW = "relay"
# The report's order of observers (enterprises in the order they come).
_ORDER = ("relay", "blanket-tap", "agency", "enterprise:", "attacker:escrow-key",
          "attacker:device-image")
#: The observers ``doormat demo`` and the dashboard ask for rows.
MEASURED_SERVICES = ("relay", "tap", "agency", "attacker")

# Whose phone the device-image attacker extracts (another enterprise than most senders).
VICTIM_USER_INDEX = 2


@dataclass
class ObserverCount:
    name: str
    captured: int
    readable: int
    metadata_records: int
    keys: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "captured": self.captured,
            "readable": self.readable,
            "metadata_records": self.metadata_records,
            "keys_held": self.keys,
        }


@dataclass
class Aggregate:
    messages_sent: int
    messages_delivered: int
    observers: list[ObserverCount]
    forward_secrecy: dict[str, Any] | None = None
    ignored: dict[str, dict[str, int]] = field(default_factory=dict)

    def observer(self, name: str) -> ObserverCount | None:
        return next((o for o in self.observers if o.name == name), None)


def _rank(name: str) -> tuple[int, int]:
    for i, prefix in enumerate(_ORDER):
        if name == prefix or (prefix.endswith(":") and name.startswith(prefix)):
            return (i, 0)
    return (len(_ORDER), 0)


def aggregate(rows: Iterable[ExposureRow]) -> Aggregate:
    """The report's counts from the observers' own rows (module doc)."""
    latest: dict[str, ExposureRow] = {}
    for row in rows:
        latest[row.observer] = row  # a later row of the same observer replaces it
    relay = latest.get(RELAY_ROW)
    carried: dict[MessageKey, set[str]] = {}
    delivered = 0
    if relay is not None and relay.carried is not None:
        for sender, msg_id, recipients, _ in relay.carried:
            carried.setdefault((sender, msg_id), set()).update(recipients)
        delivered = sum(1 for *_, done in relay.carried if done)
    counts: list[ObserverCount] = []
    ignored: dict[str, dict[str, int]] = {}
    for name in sorted(latest, key=lambda n: (_rank(n), list(latest).index(n))):
        row = latest[name]
        if row.journal is not None:
            count, dropped = _journal_count(row, carried)
        else:
            count, dropped = _count(row, carried)
        counts.append(count)
        if any(dropped.values()):
            ignored[name] = dropped
    fs = None
    image = latest.get("attacker:device-image")
    if image is not None and isinstance(image.detail.get("forward_secrecy"), dict):
        fs = dict(image.detail["forward_secrecy"])
    return Aggregate(len(carried), delivered, counts, fs, ignored)


def _count(row: ExposureRow, carried: dict[MessageKey, set[str]]) -> tuple[ObserverCount,
                                                                            dict[str, int]]:
    captured = {k for k in row.captured if k in carried}
    readable = {k for k in row.readable if k in captured}
    records = sum(n for s, i, n in row.records if (s, i) in carried)
    dropped = {
        "messages": len(set(row.captured) - captured),
        "readable": len(set(row.readable) - readable),
        "records": sum(n for s, i, n in row.records if (s, i) not in carried),
    }
    return ObserverCount(row.observer, len(captured), len(readable), records,
                         list(row.keys_held)), dropped


def _journal_count(row: ExposureRow, carried: dict[MessageKey, set[str]]) -> tuple[
        ObserverCount, dict[str, int]]:
    assert row.journal is not None
    counted = [
        (device, direction, sender, msg_id)
        for device, direction, sender, msg_id in row.journal
        if (sender, msg_id) in carried
        and ((direction == "out" and device == sender)
             or (direction == "in" and device in carried[(sender, msg_id)]))
    ]
    messages = {(s, i) for _, _, s, i in counted}
    opened = set(row.readable)
    readable = {k for k in messages if k in opened}
    dropped = {"journal_records": len(row.journal) - len(counted)}
    return ObserverCount(row.observer, len(messages), len(readable), len(counted),
                         list(row.keys_held)), dropped


def report(
    scenario: dict[str, Any],
    result: Aggregate,
    **extra: Any,
) -> dict[str, Any]:
    """The report's JSON: scenario, messages_sent, messages_delivered, observers{...},
    then ``extra`` (alarms, forward_secrecy, ledger, ...)."""
    out: dict[str, Any] = {
        "scenario": scenario,
        "messages_sent": result.messages_sent,
        "messages_delivered": result.messages_delivered,
        "observers": {o.name: o.to_json() for o in result.observers},
    }
    out.update(extra)
    return out


__all__ = [
    "MEASURED_SERVICES",
    "RELAY_ROW",
    "VICTIM_USER_INDEX",
    "Aggregate",
    "ObserverCount",
    "aggregate",
    "report",
]
