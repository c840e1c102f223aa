"""The agency's receiving end: opens what was delivered to it and shows what it holds.

Everything reaches it sealed to its own key (the format is ``wire.li.handover``). Inside, IRI
records are metadata; CC records carry either plaintext (from a party that legitimately
held a key: an enterprise's disclosed archive) or the end-to-end ciphertext the relay
had, which the agency tries to open with every key it holds - none - and so cannot read.

Events (actor ``agency``): ``agency.received`` (category, liid, sequence, source, id,
from, to, readable, and ``text`` when it read the content).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from clients.crypto import CryptoError, open_sealed
from interceptor.court import AgencyKeyPair
from interceptor.readers import Reader
from wire import envelope as wire_envelope
from wire.b64 import b64decode
from wire.envelope import EnvelopeError
from wire.events import EventLog
from wire.li.handover import HANDOVER_INFO, decode_record

AGENCY_ID = "agency"


@dataclass
class Received:
    record: dict[str, Any]
    readable: bool
    text: str | None


@dataclass
class Agency:
    keys: AgencyKeyPair
    events: EventLog
    # Keys the agency holds for end-to-end content: none. (A reader list so the lab can
    # show what would change if it held one.)
    readers: list[Reader] = field(default_factory=list)
    received: list[Received] = field(default_factory=list)

    def receive(self, sealed: bytes) -> Received:
        try:
            record = decode_record(open_sealed(self.keys.private_key, sealed, info=HANDOVER_INFO))
        except (CryptoError, ValueError) as exc:
            self.events.emit(AGENCY_ID, "agency.rejected", reason=f"cannot open: {exc}")
            raise
        text: str | None = None
        if record.get("category") == "CC":
            if isinstance(record.get("plaintext"), str):
                text = record["plaintext"]
            elif isinstance(record.get("envelope"), str):
                text = self._try_open(record["envelope"])
        got = Received(record, text is not None, text)
        self.received.append(got)
        fields = {k: record.get(k) for k in ("category", "liid", "sequence", "source", "id", "to")}
        fields["from"] = record.get("from")
        fields["readable"] = got.readable
        if text is not None:
            fields["text"] = text
        self.events.emit(AGENCY_ID, "agency.received", **fields)
        return got

    def _try_open(self, envelope_b64: str) -> str | None:
        try:
            env = wire_envelope.parse(b64decode(envelope_b64, "record 'envelope'"))
        except (ValueError, EnvelopeError):
            return None
        for reader in self.readers:
            opened = reader.try_open(env)
            if opened is not None:
                return opened.decode(errors="replace")
        return None

    def exposure(self) -> tuple[int, int, int]:
        """(captured messages, readable messages, metadata records) from what it holds."""
        messages = {(r.record.get("from"), r.record.get("id")) for r in self.received}
        readable = {(r.record.get("from"), r.record.get("id")) for r in self.received
                    if r.readable}
        iri = sum(1 for r in self.received if r.record.get("category") == "IRI")
        return len(messages), len(readable), iri
