"""The relay on the plane: the controls it serves and the exposure row it computes of
itself (docs/architecture.md, "The observation and control plane").

Controls (``wire.control`` says who may give each; the plane checks that first):

* ``li.set {mode}`` (the operator): the LI switch, persisted in the relay's database;
* ``ghost.set {on}`` (the government): the ghost mandate served on the operator's
  directory;
* ``split.set {hidden_from}`` (the operator, dishonest): a split view of the log;
* ``breach.store`` (an attacker, by a simulated breach): a copy of every envelope the
  store retains - all a breach of the relay can yield, since it holds no key;
* ``measure`` (the observer): its row, below.

Its row (``wire.plane.ExposureRow``), from its own store, with the keys it holds (none):
``captured`` the messages of which it keeps an envelope's bytes, ``readable`` none,
``records`` its metadata records (one per envelope), and ``carried``: every envelope it
accepted, by message, with its recipients and whether all of them acknowledged it -
the record of what was really sent, which the aggregator trusts over anyone's claim.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from infra.plane import Handler, Measurer
from relay.store import Captured, Store
from wire.b64 import b64encode
from wire.control import Request
from wire.events import Event
from wire.ids import RELAY_ID
from wire.plane import ExposureRow

if TYPE_CHECKING:
    from relay.service import RelayService

OBSERVER_NAME = "relay"


def relay_row(rows: Iterable[Captured]) -> ExposureRow:
    """The relay's exposure row from its store's rows (sans I/O)."""
    held: dict[tuple[str, str], int] = {}
    carried: dict[tuple[str, str], tuple[list[str], bool]] = {}
    for c in rows:
        key = (c.sender, c.msg_id)
        recipients, delivered = carried.get(key, ([], True))
        recipients.append(c.recipient)
        carried[key] = (recipients, delivered and c.acked_ms is not None)
        if c.raw is not None:
            held[key] = held.get(key, 0) + 1
    return ExposureRow(
        OBSERVER_NAME,
        keys_held=[],
        metadata_records=sum(held.values()),
        captured=list(held),
        readable=[],  # it runs no reader: it holds no key
        records=[(s, i, n) for (s, i), n in held.items()],
        carried=[(s, i, to, done) for (s, i), (to, done) in carried.items()],
    )


def read_rows(db_path: Path) -> list[Captured]:
    """Every envelope row of the store, through a read-only connection of its own."""
    reader = Store(db_path, readonly=True)
    try:
        return list(reader.captured())
    finally:
        reader.close()


class RelayControls:
    """The handlers of the relay's controls, over a running ``RelayService``."""

    def __init__(self, service: RelayService, measure_interval: float = 1.0) -> None:
        self.service = service
        self.measurer = Measurer(RELAY_ID, service.events, self._rows, measure_interval)
        service.events.subscribe(self._on_event)

    def handlers(self) -> dict[str, Handler]:
        return {
            "li.set": self.li_set,
            "ghost.set": self.ghost_set,
            "split.set": self.split_set,
            "breach.store": self.breach_store,
            "measure": self.measurer.handle,
        }

    def _on_event(self, event: Event) -> None:
        if event["kind"] == "relay.accepted":
            # (RuntimeError: no running loop, a store read outside the service)
            with contextlib.suppress(RuntimeError):
                self.measurer.poke()

    async def _rows(self) -> list[ExposureRow]:
        rows = await asyncio.to_thread(read_rows, self.service.db_path)
        return [relay_row(rows)]

    def li_set(self, request: Request) -> dict[str, Any]:
        previous = self.service.li.mode
        self.service.li.set_mode(request.args["mode"], by=request.sender)
        return {"mode": self.service.li.mode, "previous": previous}

    def ghost_set(self, request: Request) -> dict[str, Any]:
        self.service.relay.set_ghost(bool(request.args["on"]))
        return {"on": self.service.relay.directory.ghost}

    def split_set(self, request: Request) -> dict[str, Any]:
        hidden = request.args["hidden_from"]
        self.service.relay.set_split_view(hidden or None)
        return {"hidden_from": sorted(hidden)}

    async def breach_store(self, request: Request) -> dict[str, Any]:
        rows = await asyncio.to_thread(read_rows, self.service.db_path)
        envelopes = [b64encode(c.raw) for c in rows if c.raw is not None]
        self.service.events.emit(RELAY_ID, "relay.breached", by=request.sender,
                                  envelopes=len(envelopes))
        return {"envelopes": envelopes}

    async def close(self) -> None:
        await self.measurer.close()


__all__ = ["OBSERVER_NAME", "RelayControls", "read_rows", "relay_row"]
