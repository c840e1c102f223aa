"""The scoped interceptor on the plane: what it takes from the court, the enterprises,
oversight and the lab, and how it reaches the agency, the enterprises and the witness -
party to party over the broker, not through the relay, as a real deployment's HI-1,
HI-2/HI-3 and CC interfaces are.

Controls it takes (``wire.control`` says from whom):

* ``warrant.submit {warrant}`` (the court, HI-1): the warrant's bytes, checked, logged
  and acted on (``InterceptorService.submit``); the answer is the decision.
* ``cc.export {authorisation_id, records}`` (an enterprise): CC the enterprise exported
  under a warrant, sealed to the agency; forwarded only under a task it runs, and only
  from the enterprise the topic names.
* ``ledger.checkpoint`` / ``ledger.copy`` (the court's oversight): checkpoint the ledger
  and have the witness cosign it; a copy of the ledger's file to verify.
* ``ledger.tamper`` / ``ledger.rollback`` (the lab): an insider edits the ledger's file
  (``interceptor.insider``), reported as ``ledger.tampered`` / ``ledger.rolled_back``.

What it sends: each sealed HI-2/HI-3 record to the agency (``handover``), a warrant to
serve to an enterprise (``warrant.serve``) - both without waiting for the answer, in
order - and each checkpoint to the court's witness (``witness.add``, answered with the
witness's response, which it must have before it acts).
"""

from __future__ import annotations

import asyncio
from typing import Any

from infra.plane import Handler, Plane
from interceptor import insider
from interceptor.ledger.witnessing import WitnessError
from interceptor.service import InterceptorService
from wire.b64 import B64Error, b64decode, b64encode
from wire.control import ControlRefused, Request
from wire.ids import AGENCY_ID, COURT_ID
from wire.witness import WitnessResponse

INSIDER = "insider"


class InterceptorLinks:
    """The interceptor's calls to the other parties, as ``InterceptorService`` takes
    them (``deliver``, ``ask_enterprise``, ``witness``)."""

    def __init__(self, plane: Plane, *, agency: str = AGENCY_ID, court: str = COURT_ID):
        self.plane = plane
        self.agency = agency
        self.court = court

    def deliver(self, sealed: bytes) -> None:
        self.plane.tell(self.agency, "handover", record=b64encode(sealed))

    def ask_enterprise(self, enterprise: str, warrant: bytes) -> None:
        self.plane.tell(enterprise, "warrant.serve", warrant=b64encode(warrant))

    async def witness(self, request: bytes) -> WitnessResponse:
        answer = await self.plane.call(self.court, "witness.add", request=b64encode(request))
        try:
            return WitnessResponse(int(answer["status"]), b64decode(answer["body"], "body"),
                                   str(answer.get("reason", "")))
        except (KeyError, TypeError, ValueError, B64Error) as exc:
            raise WitnessError(f"the witness's answer is unreadable: {exc}") from None


class InterceptorControls:
    def __init__(self, service: InterceptorService, plane: Plane) -> None:
        self.service = service
        plane.serve_all(self.handlers())

    def handlers(self) -> dict[str, Handler]:
        return {
            "warrant.submit": self.warrant_submit,
            "cc.export": self.cc_export,
            "ledger.checkpoint": self.ledger_checkpoint,
            "ledger.copy": self.ledger_copy,
            "ledger.tamper": self.ledger_tamper,
            "ledger.rollback": self.ledger_rollback,
        }

    async def warrant_submit(self, request: Request) -> dict[str, Any]:
        try:
            data = b64decode(request.args["warrant"], "warrant")
        except B64Error as exc:
            raise ControlRefused(str(exc)) from None
        decision = await self.service.submit(data)
        return {"decision": decision.to_json()}

    def cc_export(self, request: Request) -> dict[str, Any]:
        try:
            sealed = [b64decode(r, "record") for r in request.args["records"]]
        except B64Error as exc:
            raise ControlRefused(str(exc)) from None
        # The enterprise is the sender the broker vouches for, not a field it wrote.
        self.service.archive_export(request.sender, request.args["authorisation_id"], sealed)
        return {"records": len(sealed)}

    async def ledger_checkpoint(self, request: Request) -> dict[str, Any]:
        try:
            await self.service.witness_now()
        except WitnessError as exc:
            raise ControlRefused(f"witness: {exc}") from None
        return {"size": self.service.core.ledger.size}

    async def ledger_copy(self, request: Request) -> dict[str, Any]:
        ledger = self.service.core.ledger
        data = await asyncio.to_thread(insider.copy, ledger.path)
        return {"origin": ledger.origin, "ledger": b64encode(data)}

    def ledger_tamper(self, request: Request) -> dict[str, Any]:
        try:
            result = insider.tamper(self.service.core.ledger.path)
        except insider.InsiderError as exc:
            raise ControlRefused(str(exc)) from None
        self.service.events.emit(INSIDER, "ledger.tampered", **result)
        return result

    def ledger_rollback(self, request: Request) -> dict[str, Any]:
        try:
            result = insider.rollback(self.service.core.ledger.path)
        except insider.InsiderError as exc:
            raise ControlRefused(str(exc)) from None
        self.service.events.emit(INSIDER, "ledger.rolled_back", **result)
        return result


__all__ = ["InterceptorControls", "InterceptorLinks"]
