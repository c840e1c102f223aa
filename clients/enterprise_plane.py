"""An enterprise server on the plane: warrants served on it by the interceptor, CC it
exports back to the interceptor, and the exposure row its archive computes of itself.

* ``warrant.serve {warrant}`` (the interceptor): the enterprise checks the warrant
  *itself*, with its own pinned copies of the court's trust store, the policy and the
  agency's key (``EnterpriseServer.accept_warrant``), and answers with its decision;
  CC it exports under it goes to the interceptor as ``cc.export`` (sealed to the agency:
  the interceptor cannot read it either).
* ``measure`` (the observer): its archive's row, from the journal records its archive
  opened with the archive key it holds: ``journal`` lists each record's journalling
  device, direction, sender and message id, so that the aggregator can count only the
  records of messages the relay really carried, journalled by a device that really sent
  or received them (a device cannot inflate the row by sealing records of messages
  that never were). An enterprise with no archive has no row.
"""

from __future__ import annotations

import contextlib
from typing import Any

from clients.archive import Record
from clients.enterprise import EnterpriseServer
from infra.plane import Handler, Measurer, Plane
from wire.b64 import B64Error, b64decode, b64encode
from wire.control import ControlRefused, Request
from wire.events import Event, now_ms
from wire.ids import INTERCEPTOR_ID
from wire.li.checks import Policy
from wire.li.errors import InterceptError
from wire.li.trust import AgencyPublicKey, TrustStore
from wire.plane import ExposureRow


def archive_row(enterprise: str, records: list[Record]) -> ExposureRow:
    """An archive's exposure row from its records (each opened with its key: readable)."""
    counts: dict[tuple[str, str], int] = {}
    for r in records:
        counts[(r.sender, r.id)] = counts.get((r.sender, r.id), 0) + 1
    return ExposureRow(
        f"enterprise:{enterprise}",
        keys_held=[f"{enterprise} archive key"],
        metadata_records=len(records),
        captured=list(counts),
        readable=list(counts),
        records=[(s, i, n) for (s, i), n in counts.items()],
        journal=[(r.device, r.direction, r.sender, r.id) for r in records],
    )


class EnterpriseControls:
    def __init__(
        self,
        server: EnterpriseServer,
        plane: Plane,
        *,
        trust: TrustStore,
        policy: Policy,
        agency: AgencyPublicKey,
        interceptor: str = INTERCEPTOR_ID,
        measure_interval: float = 1.0,
    ) -> None:
        self.server = server
        self.plane = plane
        self.trust = trust
        self.policy = policy
        self.agency = agency
        self.interceptor = interceptor
        name = server.enterprise.name
        self.measurer = Measurer(name, server.events, self._rows, measure_interval)
        plane.serve_all(self.handlers())
        server.events.subscribe(self._on_event)

    def handlers(self) -> dict[str, Handler]:
        return {"warrant.serve": self.warrant_serve, "measure": self.measurer.handle}

    def export(self, authorisation_id: str, sealed: list[bytes]) -> None:
        """Where the server's CC exports go: to the interceptor, in order, unanswered."""
        self.plane.tell(self.interceptor, "cc.export", authorisation_id=authorisation_id,
                        records=[b64encode(s) for s in sealed])

    def warrant_serve(self, request: Request) -> dict[str, Any]:
        try:
            data = b64decode(request.args["warrant"], "warrant")
        except B64Error as exc:
            raise ControlRefused(str(exc)) from None
        try:
            decision = self.server.accept_warrant(
                data, agency=self.agency, trust=self.trust, policy=self.policy,
                now=now_ms() // 1000, deliver=self.export,
            )
        except (ValueError, InterceptError) as exc:
            raise ControlRefused(str(exc)) from None
        return {"accepted": decision.accepted, "reason": decision.reason,
                "action": decision.action, "authorisation_id": decision.authorisation_id}

    def _on_event(self, event: Event) -> None:
        if event["kind"] == "enterprise.archived":
            with contextlib.suppress(RuntimeError):
                self.measurer.poke()

    def _rows(self) -> list[ExposureRow]:
        archive = self.server.archive
        if archive is None:
            return []
        return [archive_row(self.server.enterprise.name, archive.records())]

    async def close(self) -> None:
        await self.measurer.close()


__all__ = ["EnterpriseControls", "archive_row"]
