"""What an observer on the government's side holds and reads, measured by itself: the
blanket tap (its captures, with the government's keys), the agency (the records
delivered to it, opened with its key). Sans I/O: bytes and keys in, a row out.

``measure_envelopes(name, raws, readers)`` tries every captured envelope with every key
the observer holds (``interceptor.readers``) and returns the row
(``wire.plane.ExposureRow``: message keys, no plaintext) and, for the observer's own
process only, what it opened (the tests check it against what was really typed). An
observer with no key runs no reader and reads nothing.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from interceptor.readers import Reader
from wire import envelope as wire_envelope
from wire.envelope import EnvelopeError
from wire.plane import ExposureRow, MessageKey


@dataclass
class Measurement:
    row: ExposureRow
    #: (sender device, message id) -> plaintext: never published, kept in-process.
    opened: dict[MessageKey, bytes] = field(default_factory=dict, repr=False)


def measure_envelopes(
    name: str, raws: Iterable[bytes], readers: Sequence[Reader] = ()
) -> Measurement:
    """Every captured envelope tried with every key held (a message counts as read
    once one key opened one of its envelopes, and its AEAD tag verified)."""
    counts: dict[MessageKey, int] = {}
    opened: dict[MessageKey, bytes] = {}
    for raw in raws:
        try:
            env = wire_envelope.parse(raw)
        except EnvelopeError:
            continue  # nothing an observer can count
        key = (env.sender, env.id)
        counts[key] = counts.get(key, 0) + 1
        if key in opened:
            continue
        for reader in readers:
            text = reader.try_open(env)
            if text is not None:
                opened[key] = text
                break
    row = ExposureRow(
        name,
        keys_held=[r.name for r in readers],
        metadata_records=sum(counts.values()),
        captured=list(counts),
        readable=[k for k in counts if k in opened],
        records=[(s, i, n) for (s, i), n in counts.items()],
    )
    return Measurement(row, opened)


__all__ = ["Measurement", "measure_envelopes"]
