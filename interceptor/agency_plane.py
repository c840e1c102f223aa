"""The agency on the plane: it takes the HI-2/HI-3 records the interceptor hands over
(``handover``, from the interceptor only), opens each with its own key, and measures
what it holds (``measure``): ``captured`` the messages its records are about,
``readable`` those whose content it read, ``records`` its IRI (metadata) records. The
agency has a row once something was delivered to it.
"""

from __future__ import annotations

from typing import Any

from clients.crypto import CryptoError
from infra.plane import Handler, Measurer, Plane
from interceptor.agency import Agency, Received
from wire.b64 import B64Error, b64decode
from wire.control import ControlRefused, Request
from wire.ids import AGENCY_ID
from wire.plane import ExposureRow

OBSERVER_NAME = "agency"


def agency_row(received: list[Received]) -> ExposureRow:
    """The agency's row from what it received (opened with its key)."""
    messages: dict[tuple[str, str], None] = {}
    readable: dict[tuple[str, str], None] = {}
    iri: dict[tuple[str, str], int] = {}
    for r in received:
        sender, msg_id = r.record.get("from"), r.record.get("id")
        if not isinstance(sender, str) or not isinstance(msg_id, str):
            continue
        key = (sender, msg_id)
        messages[key] = None
        if r.readable:
            readable[key] = None
        if r.record.get("category") == "IRI":
            iri[key] = iri.get(key, 0) + 1
    return ExposureRow(
        OBSERVER_NAME,
        keys_held=["agency delivery key"],
        metadata_records=sum(iri.values()),
        captured=list(messages),
        readable=list(readable),
        records=[(s, i, n) for (s, i), n in iri.items()],
    )


class AgencyControls:
    def __init__(self, agency: Agency, plane: Plane, measure_interval: float = 1.0) -> None:
        self.agency = agency
        self.measurer = Measurer(AGENCY_ID, agency.events, self._rows, measure_interval)
        plane.serve_all(self.handlers())

    def handlers(self) -> dict[str, Handler]:
        return {"handover": self.handover, "measure": self.measurer.handle}

    def handover(self, request: Request) -> dict[str, Any]:
        try:
            got = self.agency.receive(b64decode(request.args["record"], "record"))
        except (B64Error, CryptoError, ValueError) as exc:
            raise ControlRefused(f"cannot open the record: {exc}") from None
        self.measurer.poke()
        return {"category": got.record.get("category"), "readable": got.readable}

    def _rows(self) -> list[ExposureRow]:
        if not self.agency.received:
            return []
        return [agency_row(self.agency.received)]

    async def close(self) -> None:
        await self.measurer.close()


__all__ = ["OBSERVER_NAME", "AgencyControls", "agency_row"]
