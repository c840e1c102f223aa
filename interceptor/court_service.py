"""The court on the plane (account ``court``): its approvers, who sign warrants, and
oversight of the audit ledger (its witness, its pinned keys, its verification).

The court follows the "double lock": a warrant takes effect only with an executive and
a judicial approval (``interceptor.court``). The approvers' private keys are the court's
and nobody else's; it pins the agency's public key (the one each warrant names) and, in
its own directory, the ledger's verifier key and its witness's key
(``ledger.vkeys``), outside the interceptor's reach.

Controls it takes (``wire.control`` says from whom):

* ``warrant.apply {case, targets, categories, not_before, not_after, approvals?,
  tamper?}`` (the lab, standing in for the police): the court drafts the warrant, the
  approvers ticked (both by default) sign it, and the court hands it to the interceptor
  (HI-1: ``warrant.submit``); the answer is the interceptor's decision. ``tamper``: the
  first target is changed after signing (an alteration in transit, which the signatures
  give away).
* ``warrant.replay`` (the lab): the court's last warrant handed over once more.
* ``warrant.cancel {authorisation_id}`` (the lab): both approvers sign its cancellation.
* ``witness.add {request}`` (the interceptor): its witness cosigns the ledger's new
  checkpoint, or refuses (a ledger behind, or inconsistent with, what it cosigned).
* ``ledger.verify`` (the lab): oversight has the interceptor checkpoint its ledger
  (witnessed), takes a copy, and verifies it with the court's pinned keys and its
  witness's latest cosigned checkpoint; ``ledger.verified`` (and at the first problem
  ``ledger.tamper_detected``, ``ledger.rollback_detected``) report it.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from infra.plane import ControlError, Handler, Plane
from interceptor.court import ApproverKey, approve, cancel, issue, trust_store_of
from interceptor.ledger import verify as verify_ledger_file
from interceptor.witness import Witness
from wire.b64 import B64Error, b64decode, b64encode
from wire.control import ControlRefused, Request
from wire.events import EventLog
from wire.ids import INTERCEPTOR_ID
from wire.li.checks import Decision, Policy
from wire.li.errors import CourtError, InterceptError
from wire.li.trust import AgencyPublicKey, TrustStore
from wire.li.warrant import Warrant

JURISDICTION = "GB"
CSP_ID = "doormat"
OVERSIGHT = "oversight"


@dataclass
class Bench:
    """The court's approvers and what it pins about the agency."""

    executive: ApproverKey
    judicial: ApproverKey
    agency_key: AgencyPublicKey
    jurisdiction: str = JURISDICTION
    csp_id: str = CSP_ID

    @classmethod
    def generate(cls, agency_key: AgencyPublicKey) -> Bench:
        return cls(
            ApproverKey.generate("home-secretary", "executive"),
            ApproverKey.generate("judicial-commissioner", "judicial"),
            agency_key,
        )

    @property
    def trust(self) -> TrustStore:
        """The approvers' public keys: what the interceptor and each enterprise pin."""
        return trust_store_of([self.executive, self.judicial])

    @property
    def policy(self) -> Policy:
        return Policy(
            jurisdiction=self.jurisdiction,
            csp_id=self.csp_id,
            agency_key_fingerprint=self.agency_key.fingerprint,
        )

    def approvers(self, roles: list[str] | None = None) -> tuple[ApproverKey, ...]:
        keys = (("executive", self.executive), ("judicial", self.judicial))
        return tuple(k for role, k in keys if roles is None or role in roles)

    def warrant(
        self,
        *,
        case: str,
        targets: list[str],
        categories: list[str],
        not_before: int,
        not_after: int,
        approvers: tuple[ApproverKey, ...] | None = None,
    ) -> Warrant:
        """A warrant drafted by the court and signed by both approvers (or those given)."""
        w = issue(
            case_reference=case,
            targets=targets,
            categories=categories,
            not_before=not_before,
            not_after=not_after,
            jurisdiction=self.jurisdiction,
            csp_id=self.csp_id,
            agency=self.agency_key,
        )
        for key in approvers if approvers is not None else self.approvers():
            w = approve(w, key)
        return w

    def cancellation(self, warrant: Warrant) -> Warrant:
        stop = cancel(warrant)
        for key in self.approvers():
            stop = approve(stop, key)
        return stop


def pinned_keys(path: Path) -> list[str]:
    return [
        line.strip()
        for line in path.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]


class CourtControls:
    def __init__(
        self,
        bench: Bench,
        plane: Plane,
        events: EventLog,
        *,
        court_dir: Path,
        witness: Witness,
        pinned_keys_path: Path,
        interceptor: str = INTERCEPTOR_ID,
    ) -> None:
        self.bench = bench
        self.plane = plane
        self.events = events
        self.court_dir = court_dir
        self.witness = witness
        self.pinned_keys_path = pinned_keys_path
        self.interceptor = interceptor
        self.issued: dict[str, Warrant] = {}  # by authorisation id
        self.last: bytes | None = None  # the last warrant handed over, as sent
        plane.serve_all(self.handlers())

    def handlers(self) -> dict[str, Handler]:
        return {
            "warrant.apply": self.warrant_apply,
            "warrant.replay": self.warrant_replay,
            "warrant.cancel": self.warrant_cancel,
            "witness.add": self.witness_add,
            "ledger.verify": self.ledger_verify,
        }

    # -- HI-1 -------------------------------------------------------------------------------

    async def submit(self, data: bytes) -> Decision:
        """Hand a warrant's bytes to the interceptor and return its decision."""
        self.last = data
        answer = await self.plane.call(self.interceptor, "warrant.submit",
                                       warrant=b64encode(data), timeout=60.0)
        try:
            return Decision.from_json(answer["decision"])
        except (KeyError, InterceptError) as exc:
            raise ControlRefused(f"the interceptor's decision is unreadable: {exc}") from None

    async def _submit_answer(self, data: bytes) -> dict[str, Any]:
        try:
            decision = await self.submit(data)
        except ControlError as exc:
            raise ControlRefused(f"the interceptor refused it: {exc.reason}") from None
        return {"decision": decision.to_json()}

    async def warrant_apply(self, request: Request) -> dict[str, Any]:
        a = request.args
        try:
            warrant = self.bench.warrant(
                case=a["case"], targets=a["targets"], categories=a["categories"],
                not_before=a["not_before"], not_after=a["not_after"],
                approvers=self.bench.approvers(a.get("approvals")),
            )
        except (CourtError, InterceptError, ValueError) as exc:
            raise ControlRefused(f"the court cannot draft it: {exc}") from None
        self.issued[warrant.authorisation_id] = warrant
        data = warrant.encode()
        if a.get("tamper"):
            obj = json.loads(data)
            # Someone swaps the first target after the approvers signed.
            first = obj["targets"][0]
            first["value"] = "mallory@acme" if first["value"] != "mallory@acme" else "eve@acme"
            first["format"] = "user"
            data = json.dumps(obj).encode()
        return await self._submit_answer(data)

    async def warrant_replay(self, request: Request) -> dict[str, Any]:
        if self.last is None:
            raise ControlRefused("the court has handed over no warrant yet")
        return await self._submit_answer(self.last)

    async def warrant_cancel(self, request: Request) -> dict[str, Any]:
        warrant = self.issued.get(request.args["authorisation_id"])
        if warrant is None:
            raise ControlRefused("the court issued no warrant with that authorisation id")
        return await self._submit_answer(self.bench.cancellation(warrant).encode())

    # -- oversight ----------------------------------------------------------------------------

    def witness_add(self, request: Request) -> dict[str, Any]:
        try:
            body = b64decode(request.args["request"], "request")
        except B64Error as exc:
            raise ControlRefused(str(exc)) from None
        response = self.witness.add_checkpoint(body)
        return {"status": response.status, "body": b64encode(response.body),
                "reason": response.reason}

    async def ledger_verify(self, request: Request) -> dict[str, Any]:
        result = await self.verify()
        result["verified"] = result.pop("ok")
        return result

    async def verify(self) -> dict[str, Any]:
        """Oversight verifies the audit ledger (module doc)."""
        problems: list[str] = []
        try:
            await self.plane.call(self.interceptor, "ledger.checkpoint", timeout=60.0)
        except ControlError as exc:
            problems.append(exc.reason if exc.reason.startswith("witness:")
                            else f"witness: {exc.reason}")
        copy = await self.plane.call(self.interceptor, "ledger.copy", timeout=60.0)
        origin = str(copy["origin"])
        with tempfile.TemporaryDirectory(dir=self.court_dir) as tmp:
            path = Path(tmp) / "ledger-copy.sqlite"
            path.write_bytes(b64decode(copy["ledger"], "ledger"))
            report = verify_ledger_file(path, pinned_keys(self.pinned_keys_path),
                                        witnessed=self.witness.latest(origin))
        problems += [str(p) for p in report.problems]
        ok = not problems
        witnessed = None if report.witnessed is None else report.witnessed.size
        self.events.emit(OVERSIGHT, "ledger.verified", ok=ok, problems=problems,
                         entries=report.entries, checkpoints=report.checkpoints,
                         witnessed=witnessed)
        if not ok:
            where = problems[0].split(":", 1)[0]
            self.events.emit(OVERSIGHT, "ledger.tamper_detected", location=where,
                             problems=problems)
            if any(p.startswith("witness:") and "rolled back" in p for p in problems):
                self.events.emit(OVERSIGHT, "ledger.rollback_detected", problems=problems)
        return {"ok": ok, "problems": problems, "entries": report.entries,
                "checkpoints": report.checkpoints, "witnessed": witnessed}


__all__ = ["CSP_ID", "JURISDICTION", "Bench", "CourtControls", "pinned_keys"]
